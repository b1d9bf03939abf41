-- Benchmark 3 baseline: the same Neovim start without the plugin.
-- Only when asked: loading it would add the same time to both starts.
local marks = os.getenv("SS_BENCH_MARKS")
  and dofile(debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "") .. "marks.lua")
if marks then
  marks.begin()
end
local root = os.getenv("SS_BENCH_ROOT")
if root then
  vim.opt.runtimepath:prepend(root .. "-absent")
end
if marks then
  marks.after_init()
end
