---@mod sharedserver.exits How a server's exit or crash is reported
---
--- The lock dir monitor (refresh.lua) notices that a server went away or
--- was restarted by its watcher; this module turns the exit record
--- (`last_exit`) into one message and the on_exit callback. Kept apart
--- because the wording depends on many cases, and each must be reported
--- exactly once.

local compat = require("sharedserver.compat")
-- Only an exit report reads the log: not loaded on the attach path at start-up.
local log = require("sharedserver.lazy")("sharedserver.log")
local notify = require("sharedserver.notify")

local M = {}

--- How long after this instance started a server its death counts as a
--- failed start (and is reported with the log's last lines).
local CRASH_WINDOW_NS = 3e9
--- How long to wait for a stopped server's exit record (`<name>.last`).
M.RECORD_WAIT_MS = 1000

--- The exit code, or 128 + the signal like a shell reports it.
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

--- "exit 1", "signal 9", or nil when neither is known (the CLI's words).
---@param exit sharedserver.LastExit|nil
---@return string|nil
function M.words(exit)
  if exit and exit.code then
    return "exit " .. exit.code
  end
  if exit and exit.signal then
    return "signal " .. exit.signal
  end
  return nil
end

--- Identifies one exit: "pid@time".
---@param exit sharedserver.LastExit|nil
---@return string|nil
function M.crash_key(exit)
  return exit and (tostring(exit.pid) .. "@" .. tostring(exit.at)) or nil
end

--- `exit` ends a series of automatic restarts: its pid is that of the last
--- restart, which this instance may never have seen (when Neovim was blocked
--- meanwhile, it reads the record only after it was removed), so it is the
--- end of the server it knew by an older pid.
---@param exit sharedserver.LastExit|nil
---@return boolean
function M.ends_restarts(exit)
  return exit ~= nil and (exit.kind == "gave-up" or exit.kind == "restart-failed")
end

--- The server `e` knew as `pid` has gone: report it (how depends on why:
--- gave up restarting, never became ready, died right after this instance
--- started it, failed, or stopped), forget what this instance knew of that
--- process, and run on_exit.
---@param e sharedserver.Entry
---@param pid integer
---@param exit sharedserver.LastExit|nil
function M.gone(e, pid, exit)
  if
    exit
    and exit.pid ~= pid
    and not M.ends_restarts(exit)
    and not (e.restarts > 0 and M.crash_key(exit) ~= e.crash_key)
  then
    exit = nil
  end
  local code = exit_code(exit)
  local reason = exit and exit.reason or "ended"
  local kind = exit and exit.kind
  local on_its_own = kind == "exited" or kind == "exited-before-ready"
  local crashed_early = on_its_own
    and e.started_pid == pid
    and e.started_ns ~= nil
    and compat.uv.hrtime() - e.started_ns < CRASH_WINDOW_NS
  local words = M.words(exit)
  if kind == "gave-up" then
    local msg = string.format("'%s' crashed (%s); %s", e.name, words or "no exit code", reason)
    notify.send("on_error", log.with_tail(e, msg), vim.log.levels.ERROR)
  elseif e.waiting then
    local msg = string.format("'%s' did not become ready: %s", e.name, reason)
    if words and kind ~= "not-ready" then
      msg = msg .. " (" .. words .. ")"
    end
    notify.send("on_error", log.with_tail(e, msg), vim.log.levels.ERROR)
  elseif crashed_early then
    local msg = string.format(
      "'%s' died unexpectedly right after it started (pid %d, %s)",
      e.name,
      pid,
      words or reason
    )
    notify.send("on_error", log.with_tail(e, msg), vim.log.levels.ERROR)
  elseif kind == "daemonized" or kind == "restart-failed" then
    local msg = string.format("'%s' (pid %d) failed: %s", e.name, pid, reason)
    notify.send("on_error", log.with_tail(e, msg), vim.log.levels.ERROR)
  elseif on_its_own and code ~= 0 then
    notify.send(
      "on_error",
      string.format("'%s' (pid %d) exited on its own (%s)", e.name, pid, words or "unknown status"),
      vim.log.levels.ERROR
    )
  elseif not e.stopping then
    notify.send("on_stop", string.format("'%s' (pid %d) stopped: %s", e.name, pid, reason))
  end
  if e.started_pid == pid then
    e.started_pid, e.started_ns = nil, nil
  end
  e.waiting, e.wait_ns, e.mine, e.log_file, e.restarts = false, nil, false, nil, 0
  notify.callback("on_exit", e.config.on_exit, code, exit)
end

--- A restart by the watcher (after a crash, or on request): report each
--- one once, and follow the new process.
---@param e sharedserver.Entry
---@param st sharedserver.Status
function M.check_crash(e, st)
  local exit = st.last_exit
  if not (e.pid and exit and st.state ~= "stopped") then
    return
  end
  if exit.kind == "restarted" then
    if exit.pid == e.pid and st.pid ~= e.pid then
      e.crash_key = M.crash_key(exit)
      notify.send("on_start", string.format("'%s' restarted (pid %d)", e.name, st.pid))
      e.pid = st.pid
    end
    return
  end
  if exit.kind ~= "crashed-restarting" then
    return
  end
  if exit.pid ~= e.pid and (st.restarts or 0) <= e.restarts then
    return
  end
  local key = M.crash_key(exit)
  if key ~= e.crash_key then
    e.crash_key = key
    notify.send(
      "on_error",
      string.format(
        "'%s' crashed (%s); restarting, attempt %d",
        e.name,
        M.words(exit) or "no exit code",
        math.max(st.restarts or 0, 1)
      ),
      vim.log.levels.ERROR
    )
  end
  -- The record keeps the dead pid until the restart, then the new one.
  e.pid = st.pid
end

return M
