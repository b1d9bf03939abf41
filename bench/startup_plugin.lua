-- Benchmark 3: Neovim's init with the plugin set up for N running servers.
--
--   SS_BENCH_ROOT=<plugin root with lua/sharedserver/native.so>
--   SS_BENCH_BIN=<sharedserver binary> SS_BENCH_SERVERS=10
--   nvim --headless -i NONE -u bench/startup_plugin.lua +qa
--
-- The servers are named bench-start-1 .. bench-start-N and must already run
-- `sleep 1000` (bench/driver.py starts them). With SS_BENCH_PROBE=<file>,
-- the refcount of each server as seen from inside this Neovim after
-- VimEnter is written there, to prove the plugin really attached, with the
-- number of its modules that loaded from bytecode. With SS_BENCH_MARKS, the
-- time of each phase (bench/marks.lua).
-- Only when asked: loading it would add the same time to both starts.
local marks = os.getenv("SS_BENCH_MARKS")
  and dofile(debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "") .. "marks.lua")
if marks then
  marks.begin()
end
local root = assert(os.getenv("SS_BENCH_ROOT"), "SS_BENCH_ROOT")
vim.opt.runtimepath:prepend(root)
local servers = {}
for i = 1, tonumber(os.getenv("SS_BENCH_SERVERS") or "10") do
  servers["bench-start-" .. i] = { command = "sleep", args = { "1000" }, grace_period = "1h" }
end
require("sharedserver").setup({
  binary = os.getenv("SS_BENCH_BIN"),
  notify = { on_start = false, on_attach = false, on_stop = false, on_error = true },
  servers = servers,
})
if marks then
  marks.after_init()
end
local probe = os.getenv("SS_BENCH_PROBE")
if probe then
  vim.api.nvim_create_autocmd("VimEnter", {
    callback = function()
      local native = require("sharedserver.native")
      local out =
        { refcounts = {}, bytecode = vim.tbl_count(require("sharedserver.compiled").loaded) }
      for name in pairs(servers) do
        out.refcounts[name] = native.status(name).refcount
      end
      local f = assert(io.open(probe, "w"))
      f:write(vim.json.encode(out))
      f:close()
    end,
  })
end
