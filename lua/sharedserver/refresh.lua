---@mod sharedserver.refresh Keeps this instance's view of each server current
---
--- What this instance believes about a server (attached, its pid, its state,
--- waiting for readiness) is corrected from the lock dir whenever the
--- monitor reports a change to its record, while waiting for readiness, and
--- after stop/restart. The monitor is started at the first attach; an idle
--- Neovim then costs nothing.

local exits = require("sharedserver.exits")
local ready = require("sharedserver.ready")
local state = require("sharedserver.state")
local statusline = require("sharedserver.statusline")

local M = {}

--- This instance is among the clients of `st`.
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

--- Apply the views of `name` the monitor read and has not passed on yet.
--- Called before this instance reads the record afresh or changes its own
--- view (an attach, a detach, a restart): what those views tell (a crash,
--- a give-up) is then told first, and none of them, read before the
--- change, undoes it afterwards.
---@param name string
function M.catch_up(name)
  local monitor = package.loaded["sharedserver.monitor"]
  for _, view in ipairs(monitor and monitor.take(name) or {}) do
    M.refresh(name, nil, view)
  end
end

--- Bring this instance's view of one server up to date with the lock dir:
--- notice crashes and restarts, that the server it knew has exited, whether
--- a server it waits for is ready, and (re)learn whether this instance is
--- attached. Runs on lock dir events, while waiting for readiness, and after
--- stop/restart.
---@param name string
---@param settle boolean|nil report an exit even if its exit record is missing
---@param seen sharedserver.Status|nil the view to apply (read by the monitor when its record changed); nil: read it now
function M.refresh(name, settle, seen)
  local e = state.servers[name]
  -- Once Neovim exits (VimLeave has detached), there is no view to keep:
  -- callbacks scheduled before still run, and would each read a record.
  if not e or vim.v.exiting ~= vim.NIL then
    return
  end
  local ok, st = true, seen
  if not st then
    M.catch_up(name)
    ok, st = pcall(function()
      return require("sharedserver.native").status(name)
    end)
  end
  if not ok or not st then
    return
  end
  exits.check_crash(e, st)
  if e.pid and (st.state == "stopped" or (st.pid and st.pid ~= e.pid)) then
    local pid = e.pid
    local exit = st.last_exit
    local known = exit and (exit.pid == pid or exits.ends_restarts(exit))
    if st.state == "stopped" and not known and not settle then
      -- The record can vanish a moment before `<name>.last` is written; that
      -- write raises another event. Settle without it if it never comes.
      vim.defer_fn(function()
        if e.pid == pid then
          M.refresh(name, true)
        end
      end, exits.RECORD_WAIT_MS)
      return
    end
    e.pid, e.attached = nil, false
    exits.gone(e, pid, exit)
  end
  e.restarts = st.restarts or 0
  if st.pid and st.state ~= "stopped" and has_me(st) then
    e.attached, e.pid, e.mine = true, st.pid, true
  elseif st.state == "stopped" then
    e.attached, e.waiting, e.wait_ns = false, false, nil
  end
  if st.log_file then
    e.log_file = st.log_file
  end
  e.state = st.state
  if e.attached and st.state == "starting" then
    ready.wait(e)
  elseif e.waiting and (st.state == "active" or st.state == "grace") then
    ready.reached(e, st)
  end
  if e.mine and not e.attached and st.state ~= "grace" then
    e.mine = false
  end
  ready.stop_if_idle()
  statusline.update()
end

--- A followed server's view, read in the monitor's fast callback (no Vim
--- function may run there): the view (nil if it could not be read) and
--- whether this instance follows `name` at all.
---@param name string
---@return sharedserver.Status|nil view, boolean follows
local function read(name)
  if not state.servers[name] then
    return nil, false
  end
  local ok, st = pcall(function()
    return require("sharedserver.native").status(name)
  end)
  return ok and st or nil, true
end

--- Apply the views the monitor read, in order; read afresh if it has none.
---@param name string
---@param views sharedserver.Status[]
local function changed(name, views)
  if #views == 0 then
    return M.refresh(name)
  end
  for _, st in ipairs(views) do
    M.refresh(name, nil, st)
  end
end

--- Watch the lock dir, so that every change to a server's record refreshes
--- it (no-op while already watching).
function M.watch()
  local ok, dir = pcall(function()
    return require("sharedserver.native").lockdir()
  end)
  if ok then
    require("sharedserver.monitor").start(dir, read, changed)
  end
end

return M
