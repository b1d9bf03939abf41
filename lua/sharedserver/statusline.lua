---@mod sharedserver.statusline The statusline text, cached between events
---
--- A statusline is redrawn often, so statusline() must not do I/O: the text
--- is recomputed from what this instance already knows whenever that
--- changes (attach, detach, lock dir events), and a change is announced with
--- User SharedServerStatus so statusline plugins can redraw.

local state = require("sharedserver.state")

local M = {}

--- What the text shows after a server's name, by state.
local MARKS = { starting = "…", active = "●", grace = "⏳" }

--- The current text; "" until something is attached.
local text = ""

--- Run User SharedServerStatus (0.7 has nvim_exec_autocmds; fall back to
--- :doautocmd if it is missing or refuses).
local function fire_event()
  local ok = pcall(vim.api.nvim_exec_autocmds, "User", {
    pattern = "SharedServerStatus",
    modeline = false,
  })
  if not ok then
    pcall(vim.cmd, "silent doautocmd <nomodeline> User SharedServerStatus")
  end
end

--- Recompute the text from the registry (no I/O), and announce a change
--- with User SharedServerStatus (not while Neovim exits).
function M.update()
  local shown = {}
  for name, e in pairs(state.servers) do
    local mark = MARKS[e.state or ""]
    if mark and (e.attached or (e.mine and e.state == "grace")) then
      shown[#shown + 1] = name
    end
  end
  local new = ""
  if #shown == 1 then
    new = shown[1] .. MARKS[state.servers[shown[1]].state]
  elseif #shown > 1 then
    new = "⚡" .. #shown
  end
  if new ~= text then
    text = new
    if vim.v.exiting == vim.NIL then
      fire_event()
    end
  end
end

--- "" when this Neovim uses no running server, "name●" (… starting,
--- ⏳ grace) for exactly one, "⚡N" for N.
---@return string
function M.text()
  return text
end

return M
