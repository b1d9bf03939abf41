---@mod sharedserver.status :ServerStatus, fidget-style: model, view, window

local model = require("sharedserver.status.model")
local view = require("sharedserver.status.view")

local M = {}

--- How often an open status window is redrawn.
M.refresh_ms = 1000

--- The lines :ServerStatus shows: the table of all servers, or one server's
--- details when `name` is given. `opts.footer = false` leaves out the
--- window's key help (for :ServerList, which prints to the message area).
---@param name string|nil
---@param opts? { footer?: boolean }
---@return string[]
function M.lines(name, opts)
  local footer = not (opts and opts.footer == false)
  if name then
    return view.detail(model.get(name), footer)
  end
  return view.table(model.collect(), footer)
end

--- Open (or replace) the status float.
---@param name string|nil
---@return integer buf, integer win
function M.open(name)
  local title = name and ("Shared Server: " .. name) or "Shared Servers"
  return require("sharedserver.status.window").open(title, function()
    return M.lines(name)
  end, M.refresh_ms)
end

return M
