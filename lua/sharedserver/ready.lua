---@mod sharedserver.ready Waiting, without blocking, for a server to become ready
---
--- A server with a `ready` check is "starting" until its watcher sees the
--- check pass. While this instance waits for one, a libuv timer also reads
--- its status at growing intervals, so readiness is noticed promptly whether
--- or not a lock dir event announces it. The timer exists only while
--- something is starting: an idle Neovim runs no timer.

local compat = require("sharedserver.compat")
local notify = require("sharedserver.notify")
local state = require("sharedserver.state")
local statusline = require("sharedserver.statusline")

local M = {}

--- The status is read at intervals that grow from the first to the last
--- value (milliseconds).
local FIRST_MS = 10
local MAX_MS = 100

---@type userdata|nil the poll timer, only while something starts
local timer = nil
local interval_ms = FIRST_MS

---@return boolean
local function any_waiting()
  for _, e in pairs(state.servers) do
    if e.waiting then
      return true
    end
  end
  return false
end

--- Stop and close the poll timer, if it runs.
function M.stop()
  if timer then
    timer:stop()
    if not timer:is_closing() then
      timer:close()
    end
    timer = nil
  end
end

--- Stop the poll timer once no server is waited for any more.
function M.stop_if_idle()
  if timer and not any_waiting() then
    M.stop()
  end
end

--- One look at every server this instance waits for; re-armed with a
--- longer interval while any of them is still starting.
local function tick()
  local names = {}
  for name, e in pairs(state.servers) do
    if e.waiting then
      names[#names + 1] = name
    end
  end
  local refresh = require("sharedserver.refresh").refresh
  for _, name in ipairs(names) do
    refresh(name)
  end
  if not timer then
    return
  end
  if any_waiting() then
    interval_ms = math.min(math.floor(interval_ms * 1.5), MAX_MS)
    timer:start(interval_ms, 0, vim.schedule_wrap(tick))
    return
  end
  M.stop()
end

--- Wait (without blocking) for `e` to pass its readiness check.
---@param e sharedserver.Entry
function M.wait(e)
  if not e.waiting then
    e.waiting, e.wait_ns = true, compat.uv.hrtime()
  end
  if timer then
    return
  end
  timer = compat.uv.new_timer()
  interval_ms = FIRST_MS
  timer:start(interval_ms, 0, vim.schedule_wrap(tick))
end

--- The server is usable: say how long it took (if this instance waited)
--- and run on_ready.
---@param e sharedserver.Entry
---@param st sharedserver.Status
function M.reached(e, st)
  local waited = e.wait_ns
  e.waiting, e.wait_ns = false, nil
  -- Only a real check is news: a server without one is "starting" only
  -- while it waits out a restart backoff.
  if waited and st.ready then
    notify.send(
      "on_start",
      string.format("'%s' is ready (%.1fs)", e.name, (compat.uv.hrtime() - waited) / 1e9)
    )
  end
  notify.callback("on_ready", e.config.on_ready, st)
end

--- After this instance started or attached to `e`: wait for readiness, or
--- run on_ready now.
---@param e sharedserver.Entry
---@param st sharedserver.Status
function M.now_or_wait(e, st)
  if st.state == "starting" then
    M.wait(e)
  else
    M.reached(e, st)
  end
  statusline.update()
end

--- Whether the poll timer runs. For tests.
---@return boolean
function M.polling()
  return timer ~= nil
end

return M
