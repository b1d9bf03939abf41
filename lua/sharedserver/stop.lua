---@mod sharedserver.stop Detaching from, stopping and restarting servers
---
--- Detaching drops this instance's reference, and the server lives on for
--- other clients or its grace period; a forced stop ends it for everyone and
--- waits for its exit record so on_exit has run on return. A restart is the
--- core's own operation (`native.restart`). Errors are notified and returned.

local exits = require("sharedserver.exits")
local notify = require("sharedserver.notify")
local refresh = require("sharedserver.refresh")
local retry = require("sharedserver.retry")
local start = require("sharedserver.start")
local state = require("sharedserver.state")
local statusline = require("sharedserver.statusline")

local M = {}

local native = require("sharedserver.native")

--- Why `name`, which does not run, cannot be stopped, in this editor's
--- terms (the library's own words name a command line to start it).
---@param name string
---@return string
local function not_running(name)
  if state.servers[name] then
    return string.format("'%s' is not running (:ServerStart %s starts it)", name, name)
  end
  return string.format(
    "no server named '%s' is running, and none is configured in this Neovim (:ServerStatus lists the servers)",
    name
  )
end

--- Stop `name` for every client, wait for its exit record, and report the
--- exit to this instance's view (on_exit) before returning.
---@param name string
---@param timeout string|nil
---@return sharedserver.Status
local function stop_now(name, timeout)
  local n = native
  local before = n.status(name)
  if before.state == "stopped" then
    error(not_running(name), 0)
  end
  local pid = before.pid
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
  refresh.catch_up(name)
  local ok, res = pcall(function()
    local n = native
    local e = state.servers[name]
    if opts.force then
      -- This instance's view sees the exit too (on_exit runs): the one
      -- message is the answer below.
      if e then
        e.stopping = true
      end
      local stopped, st = pcall(stop_now, name, opts.timeout)
      if e then
        e.stopping = nil
      end
      if not stopped then
        error(st, 0)
      end
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
    if not e and n.status(name).state == "stopped" then
      error(not_running(name), 0)
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
    local st, _, busy = n.try("decref", name)
    if busy then
      -- Its lock is busy: drop the reference from a timer (retry.lua), and
      -- say so once if it stays busy.
      retry.run(function()
        return n.try("decref", name)
      end, function(value, err)
        if value == nil then
          notify.failed(err)
        end
        refresh.refresh(name)
      end)
      return string.format(
        "detaching from '%s' (its lock is busy; finishing in the background)",
        name
      )
    end
    if not st then
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
    return notify.failed(res)
  end
  notify.send("on_stop", res)
  return true, nil
end

--- Restart the server in place: one operation of the core, under the
--- name's lock. Every client stays attached to the new process (same pid,
--- metadata and attach time), and other instances see a restart, not a
--- stop. A server that is not running is started (and this instance
--- attached), as :ServerStart would.
---@param name string
---@param opts? { timeout?: string } how long to wait after SIGTERM before SIGKILL
---@return boolean ok, sharedserver.Status|string status_or_error
function M.restart(name, opts)
  refresh.catch_up(name)
  local ok, res = pcall(function()
    state.entry(name)
    local n = native
    if n.status(name).state == "stopped" then
      return nil
    end
    return n.restart(name, { timeout = opts and opts.timeout })
  end)
  if not ok then
    return notify.failed(res)
  end
  if res == nil then
    return start.start(name)
  end
  refresh.refresh(name)
  return true, res
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
        return native.status(name)
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

return M
