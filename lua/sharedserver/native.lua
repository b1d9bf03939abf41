---@mod sharedserver.native The native module, opened on first use
---
--- The one way the plugin reaches src/lua/: `require("sharedserver.native")`
--- returns this table, and its first field access opens the library through
--- loader.lua (which refuses a missing or mismatched build with a message
--- saying how to rebuild it). A native function reports failure as
--- `nil, message, retry`; this wrapper raises the message alone (level 0: one
--- line, no position, no traceback), so a pcall sees exactly the cause and
--- the fix. `try` returns the triple instead, for callers that retry a busy
--- server from a timer (retry.lua).

local loader = require("sharedserver.loader")

---@type sharedserver.Native
local M = setmetatable({
  --- Call native `key`: its value, or `nil, message, retry` (retry is a
  --- sharedserver.Retry when the failure passes: call again later).
  ---@param key string
  ---@return any value, string|nil err, sharedserver.Retry|nil retry
  try = function(key, ...)
    local opened, mod = pcall(loader.load)
    if not opened then
      return nil, tostring(mod) -- not built, or a mismatched build: says how to fix it
    end
    local f = mod[key]
    if type(f) ~= "function" then
      -- A library built before this Lua code (the same version number):
      -- say so, rather than "attempt to call a nil value".
      return nil,
        string.format(
          "sharedserver: native module %s has no %s(): it is older than the Lua code; rebuild it: %s",
          loader.path,
          key,
          loader.build_hint()
        )
    end
    local value, err, retry = f(...)
    if value == nil and err ~= nil then
      return nil, "sharedserver: " .. tostring(err), retry
    end
    return value
  end,
}, {
  __index = function(self, key)
    local mod = loader.load()
    local f = mod[key]
    if type(f) ~= "function" then
      return f
    end
    local wrapped = function(...)
      local value, err = f(...)
      if value == nil and err ~= nil then
        error("sharedserver: " .. tostring(err), 0)
      end
      return value
    end
    rawset(self, key, wrapped)
    return wrapped
  end,
})

return M
