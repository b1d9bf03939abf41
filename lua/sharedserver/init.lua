---@mod sharedserver Share one server process among Neovim instances
---
--- setup() only records configuration and installs two autocommands; the
--- native module is opened on VimEnter (or on the first API call). Attaching,
--- detaching and status run in-process through the native module; only a cold
--- start spawns a process (the server's watcher).

local compat = require("sharedserver.compat")
local config = require("sharedserver.config")

local M = {}

local exits = require("sharedserver.exits")
local log = require("sharedserver.log")
local ready = require("sharedserver.ready")
local refresh = require("sharedserver.refresh")
local state = require("sharedserver.state")
local statusline = require("sharedserver.statusline")
local say = require("sharedserver.notify")
local notify, callback, errmsg = say.send, say.callback, say.errmsg

local run = {
  autocmds = false,
}

---@return sharedserver.Native
local function native()
  return require("sharedserver.loader").load()
end

---@param e sharedserver.Entry
---@return string|nil path, string|nil source_or_error
local function binary_for(e)
  return require("sharedserver.binary").resolve(e.config.binary or state.opts.binary)
end

--- This instance is now attached to `e`'s server (status `st`): remember
--- it, watch the lock dir, and wait for readiness or run on_ready.
---@param e sharedserver.Entry
---@param st sharedserver.Status
local function now_attached(e, st)
  e.attached, e.pid, e.mine, e.state = true, st.pid, true, st.state
  e.log_file = st.log_file or e.log_file
  e.restarts = st.restarts or 0
  -- Crashes before this attach are not news.
  local ok, full = pcall(function()
    return native().status(e.name)
  end)
  e.crash_key = ok and exits.crash_key(full.last_exit) or nil
  refresh.watch()
end

--- Attach to `name` if it is running (the lazy servers' VimEnter action).
---@param name string
---@return boolean attached
local function attach_if_running(name)
  local e = state.entry(name)
  local n = native()
  -- Not needed to attach, but lets the library restore a dead watcher.
  n.set_binary((binary_for(e)))
  local st = n.status(name)
  if st.state ~= "active" and st.state ~= "grace" and st.state ~= "starting" then
    return false
  end
  local ok, res = pcall(n.incref, name)
  if not ok then
    return false -- it stopped in between; a lazy server is then left alone
  end
  now_attached(e, res)
  notify(
    "on_attach",
    string.format("attached to '%s' (pid %d, refcount %d)", name, res.pid, res.refcount)
  )
  ready.now_or_wait(e, res)
  return true
end

--- Start the server, or attach to it if it already runs (for lazy servers
--- too). This instance then holds a reference until it detaches or exits.
--- Returns at once: a server with a `ready` check is then "starting", and
--- on_ready runs when it passes.
---@param name string
---@return boolean ok, sharedserver.Status|string status_or_error
function M.start(name)
  local ok, res = pcall(function()
    local e = state.entry(name)
    local n = native()
    local bin, why = binary_for(e)
    n.set_binary(bin)
    local spec = config.native_spec(name, e.config, bin)
    local started, st = pcall(n.start, name, spec)
    if not started then
      if not bin and tostring(st):find("binary", 1, true) then
        error(string.format("cannot start '%s': %s", name, why), 0)
      end
      error(st, 0)
    end
    return st
  end)
  if not ok then
    local msg = errmsg(res)
    notify("on_error", msg, vim.log.levels.ERROR)
    return false, msg
  end
  local st = res --[[@as sharedserver.Status]]
  local e = state.servers[name]
  now_attached(e, st)
  -- An exit between start() returning and the watch starting raised no
  -- event: look once more.
  vim.schedule(function()
    refresh.refresh(name)
  end)
  if st.started then
    e.started_pid, e.started_ns = st.pid, compat.uv.hrtime()
    local waiting = st.state == "starting" and st.ready
    notify(
      "on_start",
      string.format(
        "started '%s' (pid %d)%s",
        name,
        st.pid,
        waiting and (", waiting for " .. st.ready) or ""
      )
    )
    callback("on_start", e.config.on_start, st.pid)
  else
    notify(
      "on_attach",
      string.format("attached to '%s' (pid %d, refcount %d)", name, st.pid, st.refcount)
    )
  end
  ready.now_or_wait(e, st)
  return true, st
end

--- Stop `name` for every client, wait for its exit record, and report the
--- exit to this instance's view (on_exit) before returning.
---@param name string
---@param timeout string|nil
---@return sharedserver.Status
local function stop_now(name, timeout)
  local n = native()
  local pid = n.status(name).pid
  local st = n.stop(name, { force = true, timeout = timeout })
  if pid and not (st.last_exit and st.last_exit.pid == pid) then
    -- The watcher removes the record a moment before it writes the exit
    -- record, so stop() can return before the exit is known: wait for it.
    vim.wait(exits.RECORD_WAIT_MS, function()
      local now = n.status(name)
      return now.state ~= "stopped" or (now.last_exit ~= nil and now.last_exit.pid == pid)
    end, 5)
    st = n.status(name)
  end
  refresh.refresh(name, true)
  return st
end

---@class sharedserver.StopOpts
---@field force? boolean stop the server for every client (default: only detach this instance)
---@field timeout? string how long to wait after SIGTERM before SIGKILL (default "5s")

--- Detach this instance from the server; it keeps running while other
--- clients use it, then for its grace period. With `force`, stop it now for
--- every client.
---@param name string
---@param opts? sharedserver.StopOpts
---@return boolean ok, string|nil err
function M.stop(name, opts)
  opts = opts or {}
  local ok, res = pcall(function()
    local n = native()
    local e = state.servers[name]
    if opts.force then
      local st = stop_now(name, opts.timeout)
      if e then
        e.attached, e.waiting, e.wait_ns, e.mine, e.state = false, false, nil, false, st.state
        statusline.update()
      end
      return string.format(
        "stopped '%s'%s",
        name,
        st.last_exit and (": " .. st.last_exit.reason) or ""
      )
    end
    if not (e and e.attached) then
      error(
        string.format(
          "this Neovim is not attached to '%s'; to stop it for every client use :ServerStop! %s",
          name,
          name
        ),
        0
      )
    end
    e.attached, e.waiting, e.wait_ns = false, false, nil
    local done, st = pcall(n.decref, name)
    if not done then
      refresh.refresh(name)
      return string.format("detached from '%s'", name)
    end
    e.pid, e.state = nil, st.state
    statusline.update()
    if st.refcount > 0 then
      return string.format(
        "detached from '%s' (%d other client(s) still attached)",
        name,
        st.refcount
      )
    end
    return string.format(
      "detached from '%s'; it stops after its grace period (%s)",
      name,
      st.grace_period or "0s"
    )
  end)
  if not ok then
    local msg = errmsg(res)
    notify("on_error", msg, vim.log.levels.ERROR)
    return false, msg
  end
  notify("on_stop", res)
  return true, nil
end

--- Stop the running server process and start a new one (a new pid). Other
--- clients stay attached to the new process, with their metadata.
---@param name string
---@return boolean ok, sharedserver.Status|string status_or_error
function M.restart(name)
  local ok, res = pcall(function()
    state.entry(name)
    local n = native()
    local st = n.status(name)
    local others = {}
    if st.state ~= "stopped" then
      local me = vim.fn.getpid()
      for _, c in ipairs(st.clients or {}) do
        if c.pid ~= me then
          others[#others + 1] = c
        end
      end
      stop_now(name)
    end
    return others
  end)
  if not ok then
    local msg = errmsg(res)
    notify("on_error", msg, vim.log.levels.ERROR)
    return false, msg
  end
  local started, st = M.start(name)
  if not started then
    return false, st
  end
  local n = native()
  for _, c in ipairs(res) do
    local joined, now = pcall(n.incref, name, c.pid, c.metadata)
    if joined then
      st = now
    end
  end
  return true, st
end

--- Detach from every configured server (with `force`, stop them all).
---@param opts? sharedserver.StopOpts
---@return boolean ok, string[] errors
function M.stop_all(opts)
  opts = opts or {}
  local errors = {}
  for _, name in ipairs(state.list()) do
    local e = state.servers[name]
    local act = e.attached
    if opts.force then
      local ok, st = pcall(function()
        return native().status(name)
      end)
      act = ok and st.state ~= "stopped"
    end
    if act then
      local ok, err = M.stop(name, opts)
      if not ok then
        errors[#errors + 1] = err
      end
    end
  end
  return #errors == 0, errors
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
    return native().status(name)
  end)
  if not ok then
    st = { name = name, state = "error", error = errmsg(st), refcount = 0 }
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

--- The VimEnter action for one server: start it, or attach if it is lazy.
---@param name string
local function enter(name)
  local e = state.servers[name]
  if not e or e.entered then
    return
  end
  e.entered = true
  if e.config.lazy then
    local ok, err = pcall(attach_if_running, name)
    if not ok then
      notify("on_error", errmsg(err), vim.log.levels.ERROR)
    end
  else
    M.start(name)
  end
end

--- Register the servers of .sharedserver.json / servers.json (native
--- config()) that are not configured in Lua. An error is one notification.
local function load_project()
  local ok, defs = pcall(function()
    return native().config(vim.fn.getcwd())
  end)
  if not ok then
    notify("on_error", "project servers: " .. errmsg(defs), vim.log.levels.ERROR)
    return
  end
  local names = vim.tbl_keys(defs)
  table.sort(names)
  for _, name in ipairs(names) do
    local e = state.servers[name]
    if not (e and e.source == "lua") then
      local def = defs[name]
      local done, err = pcall(M._register, name, config.from_def(def), def.source)
      if not done then
        notify("on_error", def.source .. ": " .. errmsg(err), vim.log.levels.ERROR)
      end
    end
  end
end

local function on_vim_enter()
  if state.opts.project then
    load_project()
  end
  state.entered = true
  for _, name in ipairs(state.list()) do
    enter(name)
  end
end

--- Detach every server this instance is attached to, in-process. Runs on
--- VimLeave, when Neovim can no longer wait for a child process.
function M._detach_all()
  require("sharedserver.monitor").stop()
  ready.stop()
  local n = package.loaded["sharedserver.native"]
  if not n then
    return
  end
  for name, e in pairs(state.servers) do
    if e.attached then
      e.attached, e.waiting = false, false
      pcall(n.decref, name)
    end
  end
end

local function ensure_autocmds()
  if run.autocmds then
    return
  end
  run.autocmds = true
  local group = vim.api.nvim_create_augroup("sharedserver", { clear = true })
  vim.api.nvim_create_autocmd("VimLeave", {
    group = group,
    callback = function()
      M._detach_all()
    end,
    desc = "sharedserver: detach from every attached server",
  })
  if vim.v.vim_did_enter == 1 then
    state.entered = true
  else
    vim.api.nvim_create_autocmd("VimEnter", {
      group = group,
      once = true,
      callback = on_vim_enter,
      desc = "sharedserver: start or attach configured servers",
    })
  end
end

--- Add (or replace) a server after setup. Once Neovim has started, a
--- non-lazy server is started (or attached to) at once.
---@param name string
---@param cfg sharedserver.ServerConfig
function M.register(name, cfg)
  M._register(name, cfg, "lua")
end

---@param name string
---@param cfg sharedserver.ServerConfig
---@param source string "lua" or the config file
function M._register(name, cfg, source)
  state.put(name, config.validate_server(name, cfg), source)
  ensure_autocmds()
  if state.entered then
    enter(name)
  end
end

--- Configure servers. With `project = true`, the servers of the nearest
--- .sharedserver.json and of ~/.config/sharedserver/servers.json are added
--- on VimEnter, under those given here (a name given here wins). Accepted forms:
---   setup({ servers = { name = cfg, ... }, commands = true, notify = {...} })
---   setup({ name = cfg, ... }, { commands = true, notify = {...} })
---   setup({ command = "...", ... }, { name = "myserver" })  -- one server
--- In the last form the server is named `opts.name` (or its own `name` key),
--- "default" if neither is given.
---@param servers? table
---@param opts? sharedserver.Opts
function M.setup(servers, opts)
  local list, order, o = config.normalize(servers, opts)
  state.opts = o
  local commands = require("sharedserver.commands")
  -- plugin/sharedserver.lua only defines the commands; setup() decides now.
  vim.g.loaded_sharedserver = true
  if o.commands then
    commands.create()
  else
    commands.delete()
  end
  for _, name in ipairs(order) do
    M.register(name, list[name])
  end
  ensure_autocmds()
  if o.project and state.entered then
    load_project()
  end
end

return M
