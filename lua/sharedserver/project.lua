---@mod sharedserver.project Servers defined in JSON files rather than in Lua
---
--- With `project = true`, the servers of the nearest .sharedserver.json and
--- of ~/.config/sharedserver/servers.json (found and parsed by the native
--- config()) are registered too. A server configured in Lua keeps its Lua
--- configuration: the user's own setup() wins over a file.

local config = require("sharedserver.config")
local notify = require("sharedserver.notify")
local state = require("sharedserver.state")

local M = {}

--- Register the project servers that are not configured in Lua. A file that
--- cannot be read, or a server it defines wrongly, is one error notification.
function M.load()
  local ok, defs = pcall(function()
    return require("sharedserver.loader").load().config(vim.fn.getcwd())
  end)
  if not ok then
    notify.send("on_error", "project servers: " .. notify.errmsg(defs), vim.log.levels.ERROR)
    return
  end
  -- Required at call time: init.lua requires this module (through
  -- autocmds.lua) while it is still loading.
  local register = require("sharedserver")._register
  local names = vim.tbl_keys(defs)
  table.sort(names)
  for _, name in ipairs(names) do
    local e = state.servers[name]
    if not (e and e.source == "lua") then
      local def = defs[name]
      local done, err = pcall(register, name, config.from_def(def), def.source)
      if not done then
        notify.send("on_error", def.source .. ": " .. notify.errmsg(err), vim.log.levels.ERROR)
      end
    end
  end
end

return M
