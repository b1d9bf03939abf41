-- Phase marks for benchmark 3 (bench/driver.py): where a Neovim start spends
-- its time, with the plugin and without. An init file loads this only when
-- SS_BENCH_MARKS=<file> is set, and calls begin() first and after_init()
-- last. At the end of VimLeave, the monotonic clock (the one Python's
-- time.monotonic_ns reads) at each mark is written to <file> as JSON: init,
-- init_end, enter, enter_end, leave and leave_end. The autocmds made before
-- the init's own run before the plugin's and those made after run after
-- them, so each pair spans the plugin's handlers.
local uv = vim.uv or vim.loop
local file = assert(os.getenv("SS_BENCH_MARKS"))

local M = {}

---@type table<string, integer>
local t = {}

local function at(key)
  return function()
    t[key] = uv.hrtime()
  end
end

function M.begin()
  t.init = uv.hrtime()
  vim.api.nvim_create_autocmd("VimEnter", { callback = at("enter") })
  vim.api.nvim_create_autocmd("VimLeave", { callback = at("leave") })
end

function M.after_init()
  t.init_end = uv.hrtime()
  vim.api.nvim_create_autocmd("VimEnter", { callback = at("enter_end") })
  vim.api.nvim_create_autocmd("VimLeave", {
    callback = function()
      t.leave_end = uv.hrtime()
      local f = assert(io.open(file, "w"))
      f:write(vim.json.encode(t))
      f:close()
    end,
  })
end

return M
