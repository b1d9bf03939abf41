---@mod sharedserver.log Where a server's log is, and its last lines in messages
---
--- A running server's record names its log; a stopped one is found by its
--- `log_file` option or the default NAME.log in the lock directory. Failure
--- messages quote the log's last lines, since that is usually where the
--- reason is.

local compat = require("sharedserver.compat")
local config = require("sharedserver.config")
local state = require("sharedserver.state")

local M = {}

--- Lines of the server's log shown when it dies right after starting.
local TAIL_LINES = 10

--- The log file of a configured server: as its record named it, else its
--- `log_file` option, else the default in the lock dir.
---@param e sharedserver.Entry
---@return string|nil
function M.of(e)
  if e.log_file then
    return e.log_file
  end
  if e.config.log_file then
    return config.expand(e.config.log_file)
  end
  local ok, path = pcall(function()
    return require("sharedserver.native").log_path(e.name)
  end)
  return ok and path or nil
end

--- `msg` followed by the last lines of the server's log.
---@param e sharedserver.Entry
---@param msg string
---@return string
function M.with_tail(e, msg)
  local log = M.of(e)
  local tail = log and compat.tail(log, TAIL_LINES)
  if tail and #tail > 0 then
    return msg .. "\nlast lines of " .. log .. ":\n" .. table.concat(tail, "\n")
  elseif log then
    return msg .. "\n(its log " .. log .. " is empty)"
  end
  return msg
end

--- The path of a server's log file (configured here or not): the one its
--- record names while it runs, else its `log_file` option, else NAME.log in
--- the lock directory. Errors if there is no such file yet.
---@param name string
---@return string
function M.path(name)
  local n = require("sharedserver.native")
  local e = state.servers[name]
  local st = n.status(name)
  local path
  if st.state == "stopped" and e and e.config.log_file then
    path = config.expand(e.config.log_file)
  else
    path = n.log_path(name)
  end
  if not compat.is_file(path) then
    error(string.format("sharedserver: '%s' has no log yet (%s does not exist)", name, path), 0)
  end
  return path
end

--- Open a server's log (see path()) read-only in a new split, at its end.
---@param name string
---@return boolean ok, string|nil err
function M.open(name)
  local ok, path = pcall(M.path, name)
  if not ok then
    return false, require("sharedserver.notify").errmsg(path)
  end
  vim.cmd("split " .. vim.fn.fnameescape(path))
  vim.bo.readonly = true
  vim.cmd("normal! G")
  return true, nil
end

return M
