-- Builds the native module and the sharedserver binary (through build.sh,
-- which holds the build recipe), then installs the module as
-- lua/sharedserver/native.so and compiles the Lua modules into bytecode/.
-- Ways to run it, all from any cwd:
--   lazy.nvim           runs it on install and update, in one of its tasks
--                       (progress via coroutine.yield, and the task is
--                       suspended while cargo runs, so Neovim stays idle)
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
-- Set when lazy.nvim resumes us with "abort" (its <C-c>).
local abort_requested = false

---@param msg string
local function progress(msg)
  if in_coroutine then
    if coroutine.yield(msg) == "abort" then
      abort_requested = true
    end
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
-- Set by the job callbacks; `wake` resumes whoever waits for them.
---@type integer|nil
local code = nil
---@type fun()
local wake = function() end
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
  wake()
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
-- detach: cargo and its rustc children get a process group of their own, so
-- an abort can stop all of them (the group id is the job's pid).
local job = vim.fn.jobstart({ "sh", root .. "/build.sh" }, {
  cwd = root,
  env = { CARGO = cargo },
  detach = true,
  on_stdout = function(_, data)
    collect_into(1, data)
  end,
  on_stderr = function(_, data)
    collect_into(2, data)
  end,
  on_exit = function(_, c)
    code = c
    wake()
  end,
})
if job <= 0 then
  fail("could not run sh " .. root .. "/build.sh (jobstart returned " .. job .. ")")
end
local group = vim.fn.jobpid(job)
local aborted = false
-- Stops build.sh, cargo and every rustc it runs. Idempotent.
local function abort()
  if code == nil and not aborted then
    aborted = true
    uv.kill(-group, "sigterm")
  end
end
-- A detached job outlives Neovim: stop the build when Neovim quits.
local leave = vim.api.nvim_create_autocmd("VimLeavePre", { callback = abort })

-- lazy.nvim's <C-c> in its window aborts every process in its process
-- registry by calling its `kill()`; registering there makes the abort reach
-- this build too. Absent (older lazy.nvim, or no lazy.nvim): nothing to do.
local registry_key = {}
local has_lazy_process, lazy_process = pcall(require, "lazy.manage.process")
local registry = has_lazy_process and type(lazy_process.running) == "table" and lazy_process.running
  or nil
if registry then
  registry[registry_key] = { kill = abort }
end

-- What lazy.nvim resumes us through, when it runs this file in one of its
-- tasks (lazy.nvim 11+): a task suspended with `suspend(false)` is not
-- resumed until `resume()`, so the wait costs nothing while cargo runs.
---@return table|nil
local function lazy_task()
  if not in_coroutine then
    return nil
  end
  local ok, async = pcall(require, "lazy.async")
  local task = ok and type(async.running) == "function" and async.running() or nil
  if task and type(task.suspend) == "function" and type(task.resume) == "function" then
    return task
  end
  return nil
end

local shown = nil
-- Reports the build's latest line when it changed since the last report.
local function report_progress()
  if last ~= shown then
    shown = last
    progress(last)
  end
end

local task = lazy_task()
if task then
  -- Wait for an event (output or exit), never poll: each callback resumes
  -- the task once, and lazy.nvim's executor idles meanwhile.
  wake = function()
    task:resume()
  end
  while code == nil do
    report_progress()
    if code ~= nil then
      break
    end
    task:suspend(false)
    -- lazy.nvim resumes its running tasks with "abort" on <C-c>.
    if coroutine.yield() == "abort" then
      abort_requested = true
    end
    if abort_requested then
      abort()
    end
  end
elseif in_coroutine then
  -- Another coroutine runner (older lazy.nvim): it resumes us whenever it
  -- likes, so block for a while on the job's events before each yield.
  while code == nil do
    vim.wait(100, function()
      return code ~= nil or last ~= shown
    end)
    if last ~= shown then
      report_progress()
    else
      coroutine.yield()
    end
  end
else
  -- Headless (nvim -l, or --headless with :luafile): the build's lines go to
  -- stdout as progress. With a UI they would write over the screen.
  if #vim.api.nvim_list_uis() == 0 then
    wake = report_progress
  end
  local waited = vim.fn.jobwait({ job }, -1)[1]
  if waited == -2 then
    -- <C-c> (nvim -l in a terminal): stop cargo, then wait for its exit.
    abort()
    vim.fn.jobwait({ job }, 5000)
  end
  -- on_exit has run by now; -3 means the job was already reaped.
  vim.wait(1000, function()
    return code ~= nil
  end)
  code = code or waited
end
wake = function() end
pcall(vim.api.nvim_del_autocmd, leave)
if registry then
  registry[registry_key] = nil
end
if aborted then
  fail("the build was aborted; nothing was installed")
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

-- The plugin's Lua modules as bytecode, which start-up loads instead of
-- parsing the source while the source is unchanged (compile.lua). Not fatal:
-- without it the modules load from source.
-- This tree's modules, found by path for the call only: the plugin may not
-- be on 'runtimepath' yet, and the session's package.path stays as it was.
local saved_path = package.path
package.path = root .. "/lua/?.lua;" .. package.path
local compiled_ok, count, compile_err = pcall(function()
  return require("sharedserver.compile").compile()
end)
package.path = saved_path
if compiled_ok and not compile_err then
  progress(string.format("compiled %d Lua modules into %s/bytecode", count, root))
else
  progress(
    "could not compile the Lua modules (they load from source, a little slower): "
      .. tostring(compiled_ok and compile_err or count)
  )
end

-- The help tags, so that :help sharedserver works whichever way the plugin
-- was installed and built. Not fatal: the module is installed.
local docs = root .. "/doc"
local tagged, tag_err = pcall(vim.cmd, "helptags " .. vim.fn.fnameescape(docs))
progress(
  tagged and ("generated " .. docs .. "/tags")
    or ("could not generate the help tags in " .. docs .. ": " .. tostring(tag_err))
)
