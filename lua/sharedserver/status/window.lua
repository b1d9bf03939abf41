---@mod sharedserver.status.window The floating window and its keymaps

local compat = require("sharedserver.compat")

local M = {}

---@class sharedserver.Float
---@field buf integer
---@field win integer
---@field timer userdata|nil

---@type sharedserver.Float|nil
local current = nil

---@param lines string[]
---@return integer width, integer height
local function size(lines)
  local w = 20
  for _, l in ipairs(lines) do
    w = math.max(w, vim.fn.strdisplaywidth(l))
  end
  return math.min(w + 2, math.max(20, vim.o.columns - 4)),
    math.min(#lines, math.max(1, vim.o.lines - 4))
end

---@param w integer
---@param h integer
---@return table
local function layout(w, h)
  return {
    relative = "editor",
    width = w,
    height = h,
    row = math.max(0, math.floor((vim.o.lines - h) / 2) - 1),
    col = math.max(0, math.floor((vim.o.columns - w) / 2)),
  }
end

local ns = vim.api.nvim_create_namespace("sharedserver.status")

---@param f sharedserver.Float
---@param lines string[]
local function draw(f, lines)
  local padded = {}
  for i, l in ipairs(lines) do
    padded[i] = " " .. l
  end
  vim.bo[f.buf].modifiable = true
  vim.api.nvim_buf_set_lines(f.buf, 0, -1, false, padded)
  vim.bo[f.buf].modifiable = false
  vim.api.nvim_buf_clear_namespace(f.buf, ns, 0, -1)
  for _, h in ipairs(require("sharedserver.status.view").highlights(lines)) do
    local stop = h.col_end < 0 and -1 or h.col_end + 1
    vim.api.nvim_buf_add_highlight(f.buf, ns, h.group, h.line, h.col_start + 1, stop)
  end
  local w, h = size(padded)
  vim.api.nvim_win_set_config(f.win, layout(w, h))
end

function M.close()
  local f = current
  current = nil
  if not f then
    return
  end
  if f.timer then
    f.timer:stop()
    if not f.timer:is_closing() then
      f.timer:close()
    end
  end
  if vim.api.nvim_win_is_valid(f.win) then
    vim.api.nvim_win_close(f.win, true)
  end
end

--- Open a float showing `render()`, redrawn every `interval_ms` while it is
--- open (no timer runs once it is closed).
---@param title string
---@param render fun(): string[]
---@param interval_ms integer|nil
---@return integer buf, integer win
function M.open(title, render, interval_ms)
  M.close()
  local buf = vim.api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "sharedserver"
  local lines = render()
  local w, h = size(lines)
  local cfg = layout(w + 1, h)
  cfg.style = "minimal"
  cfg.border = "rounded"
  if vim.fn.has("nvim-0.9") == 1 then
    cfg.title = " " .. title .. " "
    cfg.title_pos = "center"
  end
  local win = vim.api.nvim_open_win(buf, true, cfg)
  vim.wo[win].wrap = false
  local f = { buf = buf, win = win }
  current = f
  draw(f, lines)
  for _, lhs in ipairs({ "q", "<Esc>" }) do
    vim.api.nvim_buf_set_keymap(buf, "n", lhs, "", {
      nowait = true,
      noremap = true,
      silent = true,
      callback = M.close,
    })
  end
  vim.api.nvim_create_autocmd("BufWipeout", {
    buffer = buf,
    once = true,
    callback = function()
      if current == f then
        M.close()
      end
    end,
  })
  if interval_ms and interval_ms > 0 then
    f.timer = compat.uv.new_timer()
    f.timer:start(
      interval_ms,
      interval_ms,
      vim.schedule_wrap(function()
        if current ~= f or not vim.api.nvim_win_is_valid(f.win) then
          if current == f then
            M.close()
          end
          return
        end
        local ok, new = pcall(render)
        if ok then
          draw(f, new)
        end
      end)
    )
  end
  return buf, win
end

---@return sharedserver.Float|nil
function M.current()
  return current
end

return M
