---@mod sharedserver.api The public API (require("sharedserver")): share one server among Neovim instances
---
--- setup() checks and records configuration, installs two autocommands and
--- hands the servers to the native module, which joins those that run on a
--- thread before VimEnter (start.prepare). Attaching, detaching and status
--- run in-process through the native module; only a cold start spawns a
--- process (the server's watcher).
---
--- This file is the public API and delegates: state.lua holds the registry,
--- start.lua/stop.lua the lifecycle, refresh.lua/exits.lua/ready.lua follow
--- the servers through the lock dir, statusline.lua and log.lua serve the
--- UI, autocmds.lua and project.lua what happens on VimEnter and VimLeave.

local lazy = require("sharedserver.lazy")
local autocmds = require("sharedserver.autocmds")
local config = require("sharedserver.config")
local log = lazy("sharedserver.log")
local notify = require("sharedserver.notify")
local project = lazy("sharedserver.project")
local ready = lazy("sharedserver.ready")
local refresh = lazy("sharedserver.refresh")
local start = lazy("sharedserver.start")
local state = require("sharedserver.state")
local statusline = lazy("sharedserver.statusline")
local stop = lazy("sharedserver.stop")

local M = {}

--- Start the server, or attach to it if it already runs (for lazy servers
--- too). This instance then holds a reference until it detaches or exits.
--- Returns at once: a server with a `ready` check is then "starting", and
--- on_ready runs when it passes.
---@param name string
---@return boolean ok, sharedserver.Status|string status_or_error
function M.start(name)
  return start.start(name)
end

--- Detach this instance from the server; it keeps running while other
--- clients use it, then for its grace period. With `force`, stop it now for
--- every client.
---@param name string
---@param opts? sharedserver.StopOpts
---@return boolean ok, string|nil err
function M.stop(name, opts)
  return stop.stop(name, opts)
end

--- Restart the server in place (a new pid); every client stays attached.
---@param name string
---@param opts? { timeout?: string }
---@return boolean ok, sharedserver.Status|string status_or_error
function M.restart(name, opts)
  return stop.restart(name, opts)
end

--- Detach from every configured server (with `force`, stop them all).
---@param opts? sharedserver.StopOpts
---@return boolean ok, string[] errors
function M.stop_all(opts)
  return stop.stop_all(opts)
end

---@class sharedserver.ServerStatus: sharedserver.Status
---@field running boolean a server process is up (starting, active or in grace)
---@field attached boolean this instance holds a reference
---@field lazy boolean
---@field registered boolean configured in this instance

--- The status of one server, configured here or not.
---@param name string
---@return sharedserver.ServerStatus
function M.status(name)
  local ok, st = pcall(function()
    return require("sharedserver.native").status(name)
  end)
  if not ok then
    st = { name = name, state = "error", error = notify.errmsg(st), refcount = 0 }
  end
  local e = state.servers[name]
  st.running = st.state == "active" or st.state == "grace" or st.state == "starting"
  st.attached = e ~= nil and e.attached
  st.lazy = e ~= nil and e.config.lazy == true
  st.registered = e ~= nil
  return st
end

--- The status of every configured server, by name.
---@return table<string, sharedserver.ServerStatus>
function M.status_all()
  local out = {}
  for _, name in ipairs(state.list()) do
    out[name] = M.status(name)
  end
  return out
end

--- Names of the configured servers, sorted.
---@return string[]
function M.list()
  return state.list()
end

--- The configuration of a server (nil if not configured). For :checkhealth.
---@param name string
---@return sharedserver.ServerConfig|nil
function M.config(name)
  local e = state.servers[name]
  return e and e.config
end

--- The global options in force.
---@return sharedserver.Opts
function M.options()
  return state.opts
end

--- A short text for the statusline: "" when this Neovim uses no running
--- server, "name●" (… starting, ⏳ grace) for exactly one, "⚡N" for N. It is
--- cached and refreshed on events, so a call does no I/O;
--- User SharedServerStatus fires when it changes.
---@return string
function M.statusline()
  return statusline.text()
end

--- Bring this instance's view of `name` up to date with the lock dir (see
--- refresh.lua). For tests.
---@param name string
---@param settle boolean|nil report an exit even if its exit record is missing
function M._refresh(name, settle)
  refresh.refresh(name, settle)
end

--- Whether the readiness poll timer runs (only while a server this
--- instance uses is starting). For tests.
---@return boolean
function M._polling()
  return ready.polling()
end

--- The path of a server's log file: the one its record names while it runs,
--- else its `log_file` option, else NAME.log in the lock directory. Errors
--- if there is no such file yet.
---@param name string
---@return string
function M.log_path(name)
  return log.path(name)
end

--- Open a server's log (see log_path()) in a new split, at its end.
---@param name string
---@return boolean ok, string|nil err
function M.open_log(name)
  return log.open(name)
end

--- Detach every server this instance is attached to, in-process. Runs on
--- VimLeave, when Neovim can no longer wait for a child process.
function M._detach_all()
  autocmds.detach_all()
end

--- Put the checked config `valid` in the registry; once Neovim has started,
--- enter it at once.
---@param name string
---@param valid sharedserver.ServerConfig
---@param source string
local function add(name, valid, source)
  state.put(name, valid, source)
  autocmds.install()
  if state.entered then
    autocmds.enter(name)
  end
end

--- Add (or replace) a server after setup. Once Neovim has started, a
--- non-lazy server is started (or attached to) at once.
---@param name string
---@param cfg sharedserver.ServerConfig
function M.register(name, cfg)
  M._register(name, cfg, "lua")
end

--- register() recording where the config came from: project.lua passes its
--- file, so that a server configured in Lua is never replaced by a file's.
---@param name string
---@param cfg sharedserver.ServerConfig
---@param source string "lua" or the config file
function M._register(name, cfg, source)
  add(name, config.server(name, cfg, source ~= "lua" and source or nil), source)
end

--- Give the library the global `binary` option (resolved), with which it
--- restores lost watchers of servers without a `binary` of their own.
---@param option string|nil
local function global_binary(option)
  require("sharedserver.native").set_binary((require("sharedserver.binary").resolve(option)))
end

--- Configure servers. With `project = true`, the servers of the config files
--- the CLI reads (see :help sharedserver-project) are added on VimEnter,
--- under those given here (a name given here wins). Accepted forms:
---   setup({ servers = { name = cfg, ... }, project = true, notify = {...}, commands = true })
---   setup({ name = cfg, ... }, { commands = true, notify = {...} })
---   setup({ command = "...", ... }, { name = "myserver" })  -- one server
--- In the last form the server is named `opts.name` (or its own `name` key),
--- "default" if neither is given. A table with only options (such as
--- `{ project = true }`) is the first form.
---@param servers? table
---@param opts? sharedserver.Opts
function M.setup(servers, opts)
  local raw, o = config.normalize(servers, opts)
  local loader = require("sharedserver.loader")
  local was_open = loader.loaded_path ~= nil
  local before = state.opts
  -- The options first: checking a server opens the library, which takes
  -- its global binary from them (and so never searches PATH for a default
  -- it would replace at once).
  state.opts = o
  local checked, list, order = pcall(config.servers, raw)
  if not checked then
    state.opts = before
    if loader.loaded_path then
      global_binary(before.binary)
    end
    error(list, 0)
  end
  if was_open then
    -- Opened before this call: the global `binary` restores lost watchers
    -- from now on.
    global_binary(o.binary)
  end
  -- plugin/sharedserver.lua only defines the commands; setup() decides now.
  -- It defines them without loading commands.lua, so that module loads here
  -- only to define them (setup() ran before plugin/) or to remove them:
  -- about 0.3 ms of Neovim's start-up otherwise (doc/PERFORMANCE.md, row 3).
  vim.g.loaded_sharedserver = true
  if not o.commands then
    require("sharedserver.commands").delete()
  elseif vim.fn.exists(":ServerStart") ~= 2 then
    require("sharedserver.commands").create()
  end
  autocmds.install()
  if not state.entered then
    for _, name in ipairs(order) do
      state.put(name, list[name], "lua")
    end
    start.prepare(state.list())
    return
  end
  -- Called after VimEnter (lazy.nvim's `event = "VeryLazy"`, a User
  -- autocommand): enter the servers now, in one call, and say so after the
  -- autocommand, as VimEnter does (notify.later).
  notify.later(function()
    for _, name in ipairs(order) do
      state.put(name, list[name], "lua")
    end
    if o.project then
      project.load()
    end
    start.enter(order)
  end)
end

return M
