-- Benchmark 3 baseline: the same Neovim start without the plugin.
local root = os.getenv("SS_BENCH_ROOT")
if root then
  vim.opt.runtimepath:prepend(root .. "-absent")
end
