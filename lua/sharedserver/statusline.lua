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

--- Set while a batch of changes is made (held()): update() waits for its end.
local holding = false

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
  if holding then
    return
  end
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
      -- A 'statusline' that calls statusline() is drawn again only at
      -- Neovim's next redraw, which may be long after a server's change
      -- (nothing typed): ask for one now. (Refused in a fast event.)
      pcall(vim.cmd, "redrawstatus!")
    end
  end
end

--- Run `f` with updates held, then update once: attaching to ten servers
--- at VimEnter recomputes the text and announces it once, not ten times.
---@param f fun()
function M.held(f)
  if holding then
    return f() -- already inside one
  end
  holding = true
  local ok, err = pcall(f)
  holding = false
  M.update()
  if not ok then
    error(err, 0)
  end
end

--- "" when this Neovim uses no running server, "name●" (… starting,
--- ⏳ grace) for exactly one, "⚡N" for N.
---@return string
function M.text()
  return text
end

return M
