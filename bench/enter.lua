-- Benchmark 12: `native.enter` starting servers that do not run, inside
-- Neovim: N at once against one alone (the starts overlap, so N should cost
-- about one, not N).
--
--   nvim --headless --clean -l bench/enter.lua LIB BIN N ROUNDS
--
-- Each round enters one fresh server and then N fresh servers (`sleep
-- 1000`), timing each call, and stops them all again. Prints one JSON
-- object: the median of each, in nanoseconds.
local util = dofile(arg[0]:gsub("[^/]*$", "") .. "util.lua")
local lib, bin, n, rounds = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4])
local native = util.native(lib, bin)
local median = util.median
local uv = vim.uv or vim.loop

local serial = 0
--- Enter `count` fresh servers; the time it took.
---@param count integer
---@return integer ns
local function enter(count)
  local items, names = {}, {}
  for i = 1, count do
    serial = serial + 1
    names[i] = "bench-enter-" .. serial
    items[i] = { name = names[i], spec = { command = "sleep", args = { "1000" } } }
  end
  local t0 = uv.hrtime()
  local answers = native.enter(items)
  local took = uv.hrtime() - t0
  for i, a in ipairs(answers) do
    assert(
      a.outcome == "started",
      names[i] .. ": " .. tostring(a.outcome) .. " " .. tostring(a.error)
    )
  end
  for _, name in ipairs(names) do
    assert(native.stop(name, { force = true }))
  end
  return took
end

local one, many = {}, {}
for _ = 1, rounds do
  one[#one + 1] = enter(1)
  many[#many + 1] = enter(n)
end
io.write(vim.json.encode({ one_ns = median(one), many_ns = median(many) }), "\n")
