-- Benchmarks 1 and 2: the native module inside Neovim, against the CLI.
--
--   nvim --headless --clean -l bench/native.lua LIB BIN NAME
--
-- LIB is target/release/libsharedserver.so (opened by exact path, as the
-- plugin's loader does), BIN the sharedserver binary, NAME a running server
-- with at least one other client (so a decref never starts its grace).
-- Prints one JSON object with medians in nanoseconds.

local util = dofile(arg[0]:gsub("[^/]*$", "") .. "util.lua")
local lib, bin, name = arg[1], arg[2], arg[3]
local native = util.native(lib, bin)
local median = util.median
local uv = vim.uv or vim.loop

local before = native.status(name)
assert(before.state == "active", "server " .. name .. " must be active")

-- 1. status(): per call, as the median of batches of 100 calls.
for _ = 1, 300 do
  native.status(name)
end
local status = {}
for _ = 1, 60 do
  local t0 = uv.hrtime()
  for _ = 1, 100 do
    native.status(name)
  end
  status[#status + 1] = (uv.hrtime() - t0) / 100
end

-- Baseline: the same question through the CLI.
local check = {}
for _ = 1, 40 do
  local t0 = uv.hrtime()
  vim.fn.system({ bin, "check", name })
  check[#check + 1] = uv.hrtime() - t0
  assert(vim.v.shell_error == 0, "check " .. name .. " exited " .. vim.v.shell_error)
end

-- 2. incref + decref of this Neovim, per pair.
local me = vim.fn.getpid()
local pair = {}
for i = 1, 400 do
  local t0 = uv.hrtime()
  local up = native.incref(name)
  local down = native.decref(name)
  pair[#pair + 1] = uv.hrtime() - t0
  if i == 1 then
    assert(up.refcount == before.refcount + 1, "incref counted")
    assert(down.refcount == before.refcount, "decref counted")
  end
end

-- Baseline: the same pair through the CLI.
local cli_pair = {}
for _ = 1, 30 do
  local t0 = uv.hrtime()
  vim.fn.system({ bin, "admin", "incref", name, "--pid", tostring(me) })
  vim.fn.system({ bin, "admin", "decref", name, "--pid", tostring(me) })
  cli_pair[#cli_pair + 1] = uv.hrtime() - t0
end

local after = native.status(name)
assert(after.refcount == before.refcount, "every incref was matched by a decref")

io.write(vim.json.encode({
  status_ns = median(status),
  check_cli_ns = median(check),
  pair_ns = median(pair),
  cli_pair_ns = median(cli_pair),
}) .. "\n")
