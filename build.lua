-- Builds the native module and the sharedserver binary (through build.sh,
-- which holds the build recipe), then installs the module as
-- lua/sharedserver/native.so. Ways to run it, all from any cwd:
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
local last = "starting build.sh"
-- Job output arrives in chunks: the first item of a chunk continues the
-- previous chunk's last (partial) line.
local partial = { [1] = "", [2] = "" }
---@param stream integer 1 stdout, 2 stderr
---@param data string[]
local function collect_into(stream, data)
  data = data or {}
  for i, piece in ipairs(data) do
    if i == 1 then
      partial[stream] = partial[stream] .. piece
    else
      local line = partial[stream]:gsub("\r", "")
      if line ~= "" then
        log[#log + 1] = line
        last = vim.trim(line)
      end
      partial[stream] = piece
    end
  end
end
local function flush_partial()
  for stream = 1, 2 do
    if partial[stream] ~= "" then
      log[#log + 1] = partial[stream]
      partial[stream] = ""
    end
  end
end

progress("build.sh (cargo build --release) in " .. root)
---@type integer|nil
local code = nil
local job = vim.fn.jobstart({ "sh", root .. "/build.sh" }, {
  cwd = root,
  env = { CARGO = cargo },
  on_stdout = function(_, data)
    collect_into(1, data)
  end,
  on_stderr = function(_, data)
    collect_into(2, data)
  end,
  on_exit = function(_, c)
    code = c
  end,
})
if job <= 0 then
  fail("could not run sh " .. root .. "/build.sh (jobstart returned " .. job .. ")")
end

if in_coroutine then
  -- The caller (lazy.nvim) resumes us from its event loop; the job's exit
  -- arrives through on_exit meanwhile.
  while code == nil do
    coroutine.yield(last)
  end
else
  local waited = vim.fn.jobwait({ job }, -1)[1]
  -- on_exit has run by now; -3 means the job was already reaped.
  vim.wait(1000, function()
    return code ~= nil
  end)
  code = code or waited
end
flush_partial()
if code ~= 0 then
  fail(
    string.format(
      "the build (build.sh, running cargo build --release) failed (exit %d) in %s; last lines of its output:\n%s",
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
