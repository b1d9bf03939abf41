-- What the benchmark scripts run with `nvim -l` share:
--   local util = dofile(arg[0]:gsub("[^/]*$", "") .. "util.lua")
local M = {}

--- The native module, opened by exact path as the plugin's loader does,
--- with `bin` as the binary that runs the watchers.
---@param lib string
---@param bin string
---@return table
function M.native(lib, bin)
  local native = assert(package.loadlib(lib, "luaopen_sharedserver_native"))()
  native.set_binary(bin)
  return native
end

--- The median of `t` (sorts it).
---@param t number[]
---@return number
function M.median(t)
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

return M
