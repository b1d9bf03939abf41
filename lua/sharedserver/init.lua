---@mod sharedserver Share one server process among Neovim instances
---
--- setup() only records configuration and installs two autocommands; the
--- native module is opened on VimEnter (or on the first API call). Attaching,
--- detaching and status run in-process through the native module; only a cold
--- start spawns a process (the server's watcher).

local compat = require("sharedserver.compat")
local config = require("sharedserver.config")

local M = {}

--- How long after this instance started a server its death counts as a
--- failed start (and is reported with the log's last lines).
local CRASH_WINDOW_NS = 3e9
--- Lines of the server's log shown when it dies right after starting.
local LOG_TAIL_LINES = 10
--- How long to wait for a stopped server's exit record (`<name>.last`).
local EXIT_RECORD_WAIT_MS = 1000

---@class sharedserver.Entry
---@field name string
---@field config sharedserver.ServerConfig
---@field attached boolean this instance holds a reference on the server
---@field pid integer|nil pid of the server this instance is attached to
---@field started_pid integer|nil pid of the server this instance started
---@field started_ns number|nil when it started it (uv.hrtime)
---@field entered boolean the VimEnter action already ran for it

local state = {
  ---@type sharedserver.Opts
  opts = vim.deepcopy(config.defaults),
  ---@type table<string, sharedserver.Entry>
  servers = {},
  autocmds = false,
  entered = false,
}

---@param kind "on_start"|"on_attach"|"on_stop"|"on_error"
---@param msg string
---@param level integer|nil
local function notify(kind, msg, level)
  if state.opts.notify[kind] then
    vim.notify("sharedserver: " .. msg, level or vim.log.levels.INFO, { title = "sharedserver" })
  end
end

---@return sharedserver.Native
local function native()
  return require("sharedserver.loader").load()
end

--- Strip the "sharedserver: " prefix native and loader errors carry.
---@param err any
---@return string
local function errmsg(err)
  return (tostring(err):gsub("^sharedserver: ", ""))
end

---@param what string
---@param fn function|nil
---@param ... any
local function callback(what, fn, ...)
  if not fn then
    return
  end
  local ok, err = pcall(fn, ...)
  if not ok then
    notify("on_error", what .. " callback failed: " .. tostring(err), vim.log.levels.ERROR)
  end
end

---@param st sharedserver.Status
---@return boolean
local function has_me(st)
  local me = vim.fn.getpid()
  for _, c in ipairs(st.clients or {}) do
    if c.pid == me then
      return true
    end
  end
  return false
end

---@param name string
---@return sharedserver.Entry
local function entry_of(name)
  local e = state.servers[name]
  if not e then
    error(
      string.format(
        "sharedserver: no server named '%s' is configured (configured: %s)",
        tostring(name),
        table.concat(M.list(), ", ")
      ),
      0
    )
  end
  return e
end

---@param exit sharedserver.LastExit|nil
---@return integer|nil
local function exit_code(exit)
  if not exit then
    return nil
  end
  if exit.code then
    return exit.code
  end
  if exit.signal then
    return 128 + exit.signal
  end
  return nil
end

--- The server `e` knew as `pid` has gone: report it and run on_exit.
---@param e sharedserver.Entry
---@param pid integer
---@param exit sharedserver.LastExit|nil
local function server_gone(e, pid, exit)
  if exit and exit.pid ~= pid then
    exit = nil
  end
  local code = exit_code(exit)
  local reason = exit and exit.reason or "ended"
  local crashed_early = reason == "exited on its own"
    and e.started_pid == pid
    and e.started_ns ~= nil
    and compat.uv.hrtime() - e.started_ns < CRASH_WINDOW_NS
  if crashed_early then
    local msg = string.format(
      "'%s' died unexpectedly right after it started (pid %d, %s)",
      e.name,
      pid,
      code and ("exit code " .. code) or reason
    )
    local log = e.config.log_file and config.expand(e.config.log_file)
    local tail = log and compat.tail(log, LOG_TAIL_LINES)
    if tail and #tail > 0 then
      msg = msg .. "\nlast lines of " .. log .. ":\n" .. table.concat(tail, "\n")
    elseif log then
      msg = msg .. "\n(its log " .. log .. " is empty)"
    else
      msg = msg .. "\nset `log_file` in its configuration to capture its output"
    end
    notify("on_error", msg, vim.log.levels.ERROR)
  elseif reason == "exited on its own" and code ~= 0 then
    notify(
      "on_error",
      string.format("'%s' (pid %d) exited with code %s", e.name, pid, tostring(code)),
      vim.log.levels.ERROR
    )
  else
    notify("on_stop", string.format("'%s' (pid %d) stopped: %s", e.name, pid, reason))
  end
  if e.started_pid == pid then
    e.started_pid, e.started_ns = nil, nil
  end
  callback("on_exit", e.config.on_exit, code, exit)
end

--- Bring this instance's view of one server up to date with the lock dir:
--- notice that the server it knew has exited, and (re)learn whether this
--- instance is attached. Runs on lock dir events and after stop/restart.
---@param name string
---@param settle boolean|nil report an exit even if its exit record is missing
function M._refresh(name, settle)
  local e = state.servers[name]
  if not e then
    return
  end
  local ok, st = pcall(function()
    return native().status(name)
  end)
  if not ok then
    return
  end
  if e.pid and (st.state == "stopped" or (st.pid and st.pid ~= e.pid)) then
    local pid = e.pid
    local exit = st.last_exit
    if st.state == "stopped" and not (exit and exit.pid == pid) and not settle then
      -- The record can vanish a moment before `<name>.last` is written; that
      -- write raises another event. Settle without it if it never comes.
      vim.defer_fn(function()
        if e.pid == pid then
          M._refresh(name, true)
        end
      end, EXIT_RECORD_WAIT_MS)
      return
    end
    e.pid, e.attached = nil, false
    server_gone(e, pid, exit)
  end
  if st.pid and st.state ~= "stopped" and has_me(st) then
    e.attached, e.pid = true, st.pid
  elseif st.state == "stopped" then
    e.attached = false
  end
end

local function watch()
  local ok, dir = pcall(function()
    return native().lockdir()
  end)
  if ok then
    require("sharedserver.monitor").start(dir, M._refresh)
  end
end

---@param e sharedserver.Entry
---@return string|nil path, string|nil source_or_error
local function binary_for(e)
  return require("sharedserver.binary").resolve(e.config.binary or state.opts.binary)
end

--- Attach to `name` if it is running (the lazy servers' VimEnter action).
---@param name string
---@return boolean attached
local function attach_if_running(name)
  local e = entry_of(name)
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
  e.attached, e.pid = true, res.pid
  watch()
  notify(
    "on_attach",
    string.format("attached to '%s' (pid %d, refcount %d)", name, res.pid, res.refcount)
  )
  return true
end

--- Start the server, or attach to it if it already runs (for lazy servers
--- too). This instance then holds a reference until it detaches or exits.
---@param name string
---@return boolean ok, sharedserver.Status|string status_or_error
function M.start(name)
  local ok, res = pcall(function()
    local e = entry_of(name)
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
  e.attached, e.pid = true, st.pid
  watch()
  -- An exit between start() returning and the watch starting raised no
  -- event: look once more.
  vim.schedule(function()
    M._refresh(name)
  end)
  if st.started then
    e.started_pid, e.started_ns = st.pid, compat.uv.hrtime()
    notify("on_start", string.format("started '%s' (pid %d)", name, st.pid))
    callback("on_start", e.config.on_start, st.pid)
  else
    notify(
      "on_attach",
      string.format("attached to '%s' (pid %d, refcount %d)", name, st.pid, st.refcount)
    )
  end
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
    vim.wait(EXIT_RECORD_WAIT_MS, function()
      local now = n.status(name)
      return now.state ~= "stopped" or (now.last_exit ~= nil and now.last_exit.pid == pid)
    end, 5)
    st = n.status(name)
  end
  M._refresh(name, true)
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
        e.attached = false
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
    e.attached = false
    local done, st = pcall(n.decref, name)
    if not done then
      M._refresh(name)
      return string.format("detached from '%s'", name)
    end
    e.pid = nil
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
--- clients stay attached to the new process.
---@param name string
---@return boolean ok, sharedserver.Status|string status_or_error
function M.restart(name)
  local ok, res = pcall(function()
    entry_of(name)
    local n = native()
    local st = n.status(name)
    local others = {}
    if st.state ~= "stopped" then
      local me = vim.fn.getpid()
      for _, c in ipairs(st.clients or {}) do
        if c.pid ~= me then
          others[#others + 1] = c.pid
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
  for _, pid in ipairs(res) do
    local joined, now = pcall(n.incref, name, pid)
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
  for _, name in ipairs(M.list()) do
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
---@field running boolean a server process is up (active or in grace)
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
  for _, name in ipairs(M.list()) do
    out[name] = M.status(name)
  end
  return out
end

--- Names of the configured servers, sorted.
---@return string[]
function M.list()
  local names = vim.tbl_keys(state.servers)
  table.sort(names)
  return names
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

local function on_vim_enter()
  state.entered = true
  for _, name in ipairs(M.list()) do
    enter(name)
  end
end

--- Detach every server this instance is attached to, in-process. Runs on
--- VimLeave, when Neovim can no longer wait for a child process.
function M._detach_all()
  require("sharedserver.monitor").stop()
  local n = package.loaded["sharedserver.native"]
  if not n then
    return
  end
  for name, e in pairs(state.servers) do
    if e.attached then
      e.attached = false
      pcall(n.decref, name)
    end
  end
end

local function ensure_autocmds()
  if state.autocmds then
    return
  end
  state.autocmds = true
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
  local valid = config.validate_server(name, cfg)
  local old = state.servers[name]
  state.servers[name] = {
    name = name,
    config = valid,
    attached = old and old.attached or false,
    pid = old and old.pid,
    started_pid = old and old.started_pid,
    started_ns = old and old.started_ns,
    entered = old and old.entered or false,
  }
  ensure_autocmds()
  if state.entered then
    enter(name)
  end
end

--- Configure servers. Accepted forms:
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
end

return M
