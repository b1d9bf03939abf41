---@mod sharedserver.project Servers defined in JSON files rather than in Lua
---
--- With `project = true`, the servers of the config files the CLI reads
--- (found, expanded and parsed by the native config(), the same code as
--- `sharedserver config`) are registered too. A server configured in Lua
--- keeps its Lua configuration: the user's own setup() wins over a file. An
--- entry that does not read is one notification; the others still load. An
--- entry whose `skip_if_env` variable is set is left out.

local notify = require("sharedserver.notify")
local state = require("sharedserver.state")

local M = {}

--- Register the project servers that are not configured in Lua. A file that
--- cannot be read, or a server it defines wrongly, is one error notification.
function M.load()
  -- A library that does not open is no fault of the project files: said in
  -- the same words as every other call says it (and so, in a batch, once).
  local opened, why = pcall(require("sharedserver.loader").load)
  if not opened then
    notify.send("on_error", notify.errmsg(why), vim.log.levels.ERROR)
    return
  end
  local ok, defs = pcall(function()
    return require("sharedserver.native").config(vim.fn.getcwd())
  end)
  if not ok then
    notify.send("on_error", "project servers: " .. notify.errmsg(defs), vim.log.levels.ERROR)
    return
  end
  -- Required at call time: api.lua requires this module (through
  -- autocmds.lua) while it is still loading.
  local register = require("sharedserver")._register
  for _, def in ipairs(defs) do
    local e = state.servers[def.name]
    if def.error then
      notify.send("on_error", "project servers: " .. def.error, vim.log.levels.ERROR)
    elseif not def.skipped and not (e and e.source == "lua") then
      local done, err = pcall(register, def.name, def.spec, def.source)
      if not done then
        notify.send("on_error", "project servers: " .. notify.errmsg(err), vim.log.levels.ERROR)
      end
    end
  end
end

return M
