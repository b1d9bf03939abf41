---@mod sharedserver.health :checkhealth sharedserver

local compat = require("sharedserver.compat")

local M = {}

--- `sharedserver --version` of a binary: "0.1.0", or nil and the output.
---@param bin string
---@return string|nil version, string output
local function binary_version(bin)
  local out = vim.fn.system({ bin, "--version" })
  if vim.v.shell_error ~= 0 then
    return nil, vim.trim(out)
  end
  return out:match("^sharedserver%s+(%S+)"), vim.trim(out)
end

---@param h sharedserver.Health
---@return sharedserver.Native|nil
local function check_native(h)
  local loader = require("sharedserver.loader")
  h.start("sharedserver: native module")
  h.info("Lua code version " .. loader.version .. ", plugin root " .. loader.root)
  local n, err = loader.try_load()
  if not n then
    h.error(err or "the native module failed to load", { loader.build_hint() })
    return nil
  end
  h.ok(
    string.format("loaded %s (version %s) with package.loadlib", loader.loaded_path, n.version())
  )
  h.info(
    "process backend: "
      .. n.backend()
      .. " (pidfd on Linux 5.3+, otherwise portable; SHAREDSERVER_BACKEND=portable forces it)"
  )
  local other = package.searchpath and package.searchpath("sharedserver.native", package.cpath)
  if other and other ~= loader.loaded_path then
    h.info(
      "package.cpath also has "
        .. other
        .. "; it is not used (the plugin opens its own library by path)"
    )
  end
  return n
end

---@param h sharedserver.Health
local function check_binary(h)
  local loader = require("sharedserver.loader")
  local ss = require("sharedserver")
  h.start("sharedserver: binary (runs a server's watcher on a cold start)")
  local override = ss.options().binary
  local bin, source = require("sharedserver.binary").resolve(override)
  if not bin then
    h.error(source or "the sharedserver binary was not found", {
      "build it: `sh build.sh` in " .. loader.root,
      "or install it: `cargo install --path " .. loader.root .. "`",
      "or set the `binary` option of setup() to its path",
    })
    return
  end
  local version, out = binary_version(bin)
  if not version then
    h.error(string.format("%s (from %s) failed to run `--version`: %s", bin, source, out), {
      "rebuild it with `sh build.sh` in " .. loader.root,
    })
  elseif version ~= loader.version then
    h.error(
      string.format(
        "%s (from %s) is version %s but the plugin is %s",
        bin,
        source,
        version,
        loader.version
      ),
      {
        "rebuild it with `sh build.sh` in " .. loader.root .. ", or update the installed copy",
      }
    )
  else
    h.ok(string.format("%s (from %s), version %s", bin, source, version))
  end
  for _, name in ipairs(ss.list()) do
    local cfg = ss.config(name)
    if cfg and cfg.binary and cfg.binary ~= override then
      local b, why = require("sharedserver.binary").resolve(cfg.binary)
      if b then
        h.ok(string.format("server '%s' uses %s", name, b))
      else
        h.error(string.format("server '%s': %s", name, why), { "fix the server's `binary` option" })
      end
    end
  end
end

---@param h sharedserver.Health
---@param n sharedserver.Native
local function check_lockdir(h, n)
  h.start("sharedserver: lock directory")
  -- The library's own rule, so health and every command agree.
  local c = n.lockdir_check()
  if not c.exists then
    h.info(c.dir .. " does not exist yet; it is created (mode 0700) on first use")
  elseif c.problem then
    h.error(string.format("%s is unsafe: %s", c.dir, c.problem), {
      "or set $SHAREDSERVER_LOCKDIR to a directory you own, closed to group and others",
    })
  else
    h.ok(c.dir .. " is owned by you and closed to group and others")
  end
end

--- `last_exit.kind`s that health reports as a failure (see ExitKind in
--- doc/ARCHITECTURE.md); a plain `exited` is one only with a non-zero code.
local FAILURES = {
  ["exited-before-ready"] = true,
  ["exited-at-start"] = true,
  ["gave-up"] = true,
  ["restart-failed"] = true,
  ["not-ready"] = true,
  ["daemonized"] = true,
}

---@param h sharedserver.Health
local function check_servers(h)
  local ss = require("sharedserver")
  local view = require("sharedserver.status.view")
  h.start("sharedserver: servers")
  local names = ss.list()
  if #names == 0 then
    h.info("no servers configured; see `:help sharedserver-setup`")
  end
  for _, name in ipairs(names) do
    local st = ss.status(name)
    local cfg = ss.config(name) or {}
    local attached = st.attached and ", attached" or ""
    if st.state == "error" then
      h.error(string.format("'%s': %s", name, st.error or "unreadable state"), {
        "inspect it with `sharedserver admin doctor " .. name .. "`",
      })
    elseif st.running then
      h.ok(
        string.format(
          "'%s' %s, pid %d, refcount %d, up %s%s",
          name,
          st.state,
          st.pid,
          st.refcount,
          view.duration(st.uptime_secs),
          attached
        )
      )
    else
      local msg = string.format("'%s' %s%s", name, st.state, cfg.lazy and " (lazy)" or "")
      local e = st.last_exit
      local failed = e and (e.kind == "exited" and e.code ~= 0 or FAILURES[e.kind])
      if failed then
        local advice = { string.format("read its log: :ServerLog %s", name) }
        for line in vim.gsplit(e.log_tail or "", "\n", true) do
          if line ~= "" then
            advice[#advice + 1] = "| " .. line
          end
        end
        h.warn(
          msg
            .. string.format(
              " after %s: %s",
              require("sharedserver.exits").words(e) or "an unknown status",
              e.reason
            ),
          advice
        )
      else
        h.ok(msg)
      end
    end
    if cfg.command and vim.fn.executable(vim.fn.expand(cfg.command)) ~= 1 then
      h.warn(
        string.format("'%s': command %s is not executable or not on $PATH", name, cfg.command),
        {
          "use an absolute path in `command`",
        }
      )
    end
    if cfg.working_dir and vim.fn.isdirectory(vim.fn.expand(cfg.working_dir)) ~= 1 then
      h.error(string.format("'%s': working_dir %s is not a directory", name, cfg.working_dir), {
        "create it or fix `working_dir`",
      })
    end
  end
end

---@param h sharedserver.Health
local function check_bytecode(h)
  local r = require("sharedserver.compile").report()
  local loader = require("sharedserver.loader")
  h.start("sharedserver: Lua bytecode (faster start-up)")
  if r.problem then
    -- Not an error: the modules work from source, only start-up is slower.
    h.info("the Lua modules load from source: " .. r.problem .. "; " .. loader.build_hint())
  elseif r.stale > 0 then
    h.warn(
      string.format(
        "%d of %d modules changed since the build; those load from source",
        r.stale,
        r.modules
      ),
      { loader.build_hint() }
    )
  else
    h.ok(
      string.format(
        "%d modules compiled by build.lua; %d loaded from bytecode so far",
        r.modules,
        r.loaded
      )
    )
  end
end

function M.check()
  local h = compat.health()
  if vim.fn.has("nvim-0.7") ~= 1 then
    h.error("Neovim 0.7 or newer is required")
  end
  local n = check_native(h)
  check_bytecode(h)
  check_binary(h)
  if n then
    check_lockdir(h, n)
    check_servers(h)
  end
end

return M
