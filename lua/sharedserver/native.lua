---@mod sharedserver.native The native module, opened on first use
---
--- The one way the plugin reaches src/lua.rs: `require("sharedserver.native")`
--- returns this table, and its first field access opens the library through
--- loader.lua (which refuses a missing or mismatched build with a message
--- saying how to rebuild it). A native function reports failure as
--- `nil, message`; this wrapper raises the message alone (level 0: one line,
--- no position, no traceback), so a pcall sees exactly the cause and the fix.

local loader = require("sharedserver.loader")

---@type sharedserver.Native
local M = setmetatable({}, {
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
