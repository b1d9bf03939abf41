---@mod sharedserver.config Options, their defaults and the setup() forms
---
--- A server's options are checked by the native module (src/options.rs), the
--- same parser as the CLI's and the config files'; here only the editor's own
--- keys (callbacks, `binary`) and the setup() forms are checked.

local M = {}

---@class sharedserver.ServerConfig
---@field command string program to run (absolute path or found on $PATH)
---@field args? string[] its arguments
---@field env? table<string, string> added to the inherited environment
---@field working_dir? string the server's working directory (default: Neovim's cwd)
---@field log_file? string file that receives the server's stdout and stderr
---@field lazy? boolean attach at startup only if already running; never start it then
---@field grace_period? string|number how long the server outlives its last client ("30m", or seconds; alias `idle_timeout`)
---@field metadata? string stored with this instance as a client (default "nvim")
---@field startup_check? string|number how long a fresh server must stay up ("50ms", "fixed:2s")
---@field ready? string readiness check: "tcp://HOST:PORT", "http://HOST:PORT/PATH", "unix:///PATH", "log:REGEX" or "cmd:COMMAND"
---@field ready_timeout? string|number how long the server may take to pass `ready` ("30s", or seconds)
---@field restart? string "on-failure" or "on-failure:MAX": restart it when it crashes ("no": never)
---@field port? string|integer "auto" (a free loopback TCP port) or a number checked to be free, found at start: the server gets it as $PORT, "${PORT}" in args, env and ready is replaced by it, and status() shows it
---@field on_start? fun(pid: integer) called when this instance started the server
---@field on_ready? fun(status: sharedserver.Status) called once the server is usable (ready), after each start, attach and automatic restart
---@field on_exit? fun(code: integer|nil, exit: sharedserver.LastExit|nil) called when a server this instance is attached to exits
---@field binary? string path of the sharedserver executable for this server

---@class sharedserver.NotifyOpts
---@field on_start? boolean this instance started a server (default true)
---@field on_attach? boolean this instance attached to a running server (default false)
---@field on_stop? boolean a server was detached from, stopped, or exited cleanly (default false)
---@field on_error? boolean errors, crashes, non-zero exits (default true)

---@class sharedserver.Opts
---@field commands? boolean create the :Server* commands (default true)
---@field notify? sharedserver.NotifyOpts
---@field binary? string path of the sharedserver executable for every server
---@field name? string name of the server in the single-server form (default "default")
---@field project? boolean also load servers from .sharedserver.json and ~/.config/sharedserver/servers.json (default false)

---@class sharedserver.SetupOpts: sharedserver.Opts
---@field servers? table<string, sharedserver.ServerConfig>

---@type sharedserver.Opts
M.defaults = {
  commands = true,
  notify = { on_start = true, on_attach = false, on_stop = false, on_error = true },
  binary = nil,
  name = "default",
  project = false,
}

--- Keys only the editor reads: checked here, never sent to the native module.
local editor_keys = {
  on_start = "function",
  on_ready = "function",
  on_exit = "function",
  binary = "string",
  name = "string",
}

--- Check one server's options: the editor's keys here, the rest by the
--- native module. Raises one line naming the origin, the server and the key.
---@param name string
---@param cfg table
---@param origin? string where the options came from (default "setup()")
---@return sharedserver.ServerConfig
function M.server(name, cfg, origin)
  origin = origin or "setup()"
  if type(cfg) ~= "table" then
    error(
      string.format(
        "sharedserver: %s: servers.%s: must be a table such as { command = ... }, not %s",
        origin,
        tostring(name),
        type(cfg)
      ),
      0
    )
  end
  local plain, own = {}, {}
  for key, value in pairs(cfg) do
    local want = editor_keys[key]
    if want == nil then
      plain[key] = value
    elseif type(value) ~= want then
      error(
        string.format(
          "sharedserver: %s: servers.%s.%s: must be a %s, not %s",
          origin,
          tostring(name),
          key,
          want,
          type(value)
        ),
        0
      )
    elseif key ~= "name" then
      own[key] = value
    end
  end
  if type(name) ~= "string" then
    error(string.format("sharedserver: %s: servers: a server name must be a string", origin), 0)
  end
  local native = require("sharedserver.loader").try_load()
  if not native then
    -- Not built yet: keep the options as given. Starting the server needs
    -- the library, and reports then that it is missing and how to build it.
    return vim.tbl_extend("force", plain, own)
  end
  local valid = native.spec(name, plain, origin)
  return vim.tbl_extend("force", valid, own)
end

--- The options the native start() takes (the editor's keys removed).
---@param cfg sharedserver.ServerConfig
---@return table
function M.plain(cfg)
  local out = {}
  for key, value in pairs(cfg) do
    if editor_keys[key] == nil then
      out[key] = value
    end
  end
  return out
end

---@param notify any
---@return sharedserver.NotifyOpts
local function validate_notify(notify)
  local out = vim.deepcopy(M.defaults.notify)
  if notify == nil then
    return out
  end
  if type(notify) ~= "table" then
    error("sharedserver: option `notify` must be a table such as { on_start = true }", 0)
  end
  for k, v in pairs(notify) do
    if out[k] == nil then
      error(
        string.format(
          "sharedserver: unknown notify option `%s` (known: on_start, on_attach, on_stop, on_error)",
          tostring(k)
        ),
        0
      )
    end
    if type(v) ~= "boolean" then
      error(string.format("sharedserver: notify option `%s` must be true or false", k), 0)
    end
    out[k] = v
  end
  return out
end

--- The options of setup(), apart from `servers`.
local option_keys = { commands = true, notify = true, binary = true, name = true, project = true }

--- Whether `t` is setup()'s options table rather than a table of servers:
--- it has `servers`, or an option key whose value is not a server (a table
--- with `command`). A server named like an option needs the `servers` form.
---@param t table
---@return boolean
local function is_options(t)
  if t.servers ~= nil then
    return true
  end
  for key, value in pairs(t) do
    if option_keys[key] and not (type(value) == "table" and value.command ~= nil) then
      return true
    end
  end
  return false
end

--- Turn the accepted call forms of setup() into servers and options:
---   setup({ servers = {...}, project = ..., notify = ..., commands = ... })
---   setup(servers, opts)
---   setup({ command = ..., ... }, opts)  -- one server, named opts.name,
---                                        -- its own `name`, or "default"
--- The servers are returned as given: servers() checks them.
---@param first table|nil
---@param second table|nil
---@return table<string, table> servers, sharedserver.Opts opts
function M.normalize(first, second)
  first = first or {}
  if type(first) ~= "table" then
    error("sharedserver: setup() expects a table, got " .. type(first), 0)
  end
  if second ~= nil and type(second) ~= "table" then
    error("sharedserver: setup()'s second argument (options) must be a table", 0)
  end
  local raw_servers, raw_opts
  if first.command ~= nil then
    local opts = second or {}
    local name = first.name or opts.name or M.defaults.name
    raw_servers = { [name] = first }
    raw_opts = opts
  elseif is_options(first) then
    raw_servers = first.servers or {}
    raw_opts = vim.tbl_extend("force", {}, first, second or {})
    raw_opts.servers = nil
    if type(raw_servers) ~= "table" then
      error("sharedserver: setup(): `servers` must be a table of name = { command = ... }", 0)
    end
  else
    raw_servers = first
    raw_opts = second or {}
  end
  for k in pairs(raw_opts) do
    if not option_keys[k] then
      error(
        string.format(
          "sharedserver: setup(): unknown option `%s` (known: servers, project, notify, commands, binary, name)",
          tostring(k)
        ),
        0
      )
    end
  end
  if raw_opts.commands ~= nil and type(raw_opts.commands) ~= "boolean" then
    error("sharedserver: setup(): `commands` must be true or false", 0)
  end
  if raw_opts.binary ~= nil and type(raw_opts.binary) ~= "string" then
    error("sharedserver: setup(): `binary` must be a path string", 0)
  end
  if raw_opts.project ~= nil and type(raw_opts.project) ~= "boolean" then
    error("sharedserver: setup(): `project` must be true or false", 0)
  end
  ---@type sharedserver.Opts
  local opts = {
    commands = raw_opts.commands ~= false,
    notify = validate_notify(raw_opts.notify),
    binary = raw_opts.binary,
    project = raw_opts.project == true,
  }
  return raw_servers, opts
end

--- Check every server given to setup() (see server()), before any is
--- registered: one bad server fails the whole call.
---@param raw table<string, table>
---@return table<string, sharedserver.ServerConfig> servers, string[] order (sorted)
function M.servers(raw)
  local servers, order = {}, {}
  for name, cfg in pairs(raw) do
    servers[name] = M.server(name, cfg)
    order[#order + 1] = name
  end
  table.sort(order)
  return servers, order
end

--- Absolute form of a user path ("~" and $VARS expanded, relative to cwd).
---@param path string
---@return string
function M.expand(path)
  return vim.fn.fnamemodify(vim.fn.expand(path), ":p")
end

return M
