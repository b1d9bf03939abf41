-- Builds the native module and the sharedserver binary, then installs the
-- module as lua/sharedserver/native.so. Ways to run it, all from any cwd:
--   lazy.nvim           runs it on install and update (progress via coroutine.yield)
--   nvim -l build.lua   (Neovim 0.9+)
--   nvim --headless -c 'luafile build.lua' -c q   (Neovim 0.7+)
-- It never changes Neovim's working directory: cargo runs as a job with its
-- own cwd.

local uv = vim.uv or vim.loop

---@return string
local function plugin_root()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    return vim.fn.fnamemodify(src:sub(2), ":p:h")
  end
  return vim.fn.getcwd()
end

local root = plugin_root()
local co, is_main = coroutine.running()
local in_coroutine = co ~= nil and not is_main

---@param msg string
local function progress(msg)
  if in_coroutine then
    coroutine.yield(msg)
  else
    io.write("sharedserver build: " .. msg .. "\n")
  end
end

---@param msg string
local function fail(msg)
  error("sharedserver build: " .. msg, 0)
end

---@return string|nil
local function find_cargo()
  if vim.fn.executable("cargo") == 1 then
    return "cargo"
  end
  local home = vim.fn.expand("~/.cargo/bin/cargo")
  if vim.fn.executable(home) == 1 then
    return home
  end
  return nil
end

---@param lines string[]
---@param n integer
---@return string
local function tail(lines, n)
  local out = {}
  for i = math.max(1, #lines - n + 1), #lines do
    out[#out + 1] = lines[i]
  end
  return table.concat(out, "\n")
end

local cargo = find_cargo()
if not cargo then
  fail(
    "cargo was not found on $PATH or in ~/.cargo/bin; install Rust (https://rustup.rs), then build again"
  )
end

---@type string[]
local log = {}
local last = "starting cargo build --release"
local function collect(_, data)
  for _, line in ipairs(data or {}) do
    line = line:gsub("\r", "")
    if line ~= "" then
      log[#log + 1] = line
      last = vim.trim(line)
    end
  end
end

progress("cargo build --release in " .. root)
local job = vim.fn.jobstart({ cargo, "build", "--release" }, {
  cwd = root,
  on_stdout = collect,
  on_stderr = collect,
})
if job <= 0 then
  fail("could not run " .. cargo .. " (jobstart returned " .. job .. ")")
end

local code
if in_coroutine then
  repeat
    code = vim.fn.jobwait({ job }, 0)[1]
    if code == -1 then
      coroutine.yield(last)
    end
  until code ~= -1
else
  code = vim.fn.jobwait({ job }, -1)[1]
end
if code ~= 0 then
  fail(
    string.format(
      "`cargo build --release` failed (exit %d) in %s; last lines of its output:\n%s",
      code,
      root,
      tail(log, 25)
    )
  )
end

local target = vim.env.CARGO_TARGET_DIR
if target == nil or target == "" then
  target = root .. "/target"
elseif target:sub(1, 1) ~= "/" then
  target = root .. "/" .. target
end
local is_mac = uv.os_uname().sysname == "Darwin"
local lib = target .. "/release/libsharedserver" .. (is_mac and ".dylib" or ".so")
if not uv.fs_stat(lib) then
  fail(
    "the build succeeded but "
      .. lib
      .. " is missing; last lines of the build output:\n"
      .. tail(log, 25)
  )
end

-- Copy next to the destination, then rename over it: a Neovim that has the
-- old library loaded keeps its (unlinked) copy intact.
local dest = root .. "/lua/sharedserver/native.so"
local tmp = string.format("%s.tmp-%d", dest, uv.os_getpid())
local ok, err = uv.fs_copyfile(lib, tmp)
if not ok then
  fail("copying " .. lib .. " to " .. tmp .. ": " .. tostring(err))
end
ok, err = uv.fs_rename(tmp, dest)
if not ok then
  uv.fs_unlink(tmp)
  fail("renaming " .. tmp .. " to " .. dest .. ": " .. tostring(err))
end
progress("installed " .. dest .. " (from " .. lib .. ")")
