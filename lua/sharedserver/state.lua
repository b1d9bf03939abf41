---@mod sharedserver.state The servers this instance knows, and what it did with them
---
--- One registry shared by every module: the options in force, each
--- configured server's entry (its config, whether this instance is attached,
--- what it last saw), and whether Neovim has entered. It holds data only;
--- the modules that act on it read it at call time, since setup() replaces
--- `opts`.

local config = require("sharedserver.config")

local M = {}

---@class sharedserver.Entry
---@field name string
---@field config sharedserver.ServerConfig
---@field attached boolean this instance holds a reference on the server
---@field pid integer|nil pid of the server this instance is attached to
---@field started_pid integer|nil pid of the server this instance started
---@field started_ns number|nil when it started it (uv.hrtime)
---@field entered boolean the VimEnter action already ran for it
---@field source string "lua", or the config file it was loaded from (`project`)
---@field state string|nil its state when this instance last looked
---@field mine boolean this instance attached to it, and it has not stopped since
---@field waiting boolean this instance waits for it to become ready (on_ready)
---@field wait_ns number|nil when the wait began (uv.hrtime)
---@field log_file string|nil its log, as its record names it
---@field restarts integer automatic restarts, as last seen
---@field crash_key string|nil the last crash (pid@time) already reported
---@field stopping boolean|nil this instance is stopping it for every client: the stop's own answer says so

---@type sharedserver.Opts
M.opts = vim.deepcopy(config.defaults)
---@type table<string, sharedserver.Entry>
M.servers = {}
--- VimEnter has run (or had already run when the autocommands were made).
M.entered = false

--- Names of the configured servers, sorted.
---@return string[]
function M.list()
  local names = vim.tbl_keys(M.servers)
  table.sort(names)
  return names
end

--- The entry of a configured server; an error naming the configured ones if
--- there is none.
---@param name string
---@return sharedserver.Entry
function M.entry(name)
  local e = M.servers[name]
  if not e then
    local names = M.list()
    error(
      string.format(
        "sharedserver: no server named '%s' is configured (%s)",
        tostring(name),
        #names > 0 and "configured: " .. table.concat(names, ", ")
          or "no servers are configured; add them to setup({ servers = ... })"
      ),
      0
    )
  end
  return e
end

--- Add or replace the entry of `name`. A replaced entry keeps what this
--- instance knows about the running server; only its config and source change.
---@param name string
---@param valid sharedserver.ServerConfig already validated
---@param source string "lua" or the config file
function M.put(name, valid, source)
  local old = M.servers[name]
  M.servers[name] = {
    name = name,
    config = valid,
    source = source,
    attached = old and old.attached or false,
    pid = old and old.pid,
    started_pid = old and old.started_pid,
    started_ns = old and old.started_ns,
    entered = old and old.entered or false,
    state = old and old.state,
    mine = old and old.mine or false,
    waiting = old and old.waiting or false,
    wait_ns = old and old.wait_ns,
    log_file = old and old.log_file,
    restarts = old and old.restarts or 0,
    crash_key = old and old.crash_key,
  }
end

return M
