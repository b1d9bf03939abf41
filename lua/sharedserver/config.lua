---@mod sharedserver.config Options, their defaults and validation

local M = {}

---@class sharedserver.ServerConfig
---@field command string program to run (absolute path or found on $PATH)
---@field args? string[] its arguments
---@field env? table<string, string> added to the inherited environment
---@field working_dir? string the server's working directory (default: Neovim's cwd)
---@field log_file? string file that receives the server's stdout and stderr
---@field lazy? boolean attach at startup only if already running; never start it then
---@field idle_timeout? string|number grace period after the last client leaves ("30m", or seconds)
---@field ready? string readiness check: "tcp://HOST:PORT", "http://HOST:PORT/PATH", "unix:///PATH", "log:REGEX" or "cmd:COMMAND"
---@field ready_timeout? string|number how long the server may take to pass `ready` ("30s", or seconds)
---@field restart? string "on-failure" or "on-failure:MAX": restart it when it crashes ("no": never)
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

local server_keys = {
  command = "string",
  args = "table",
  env = "table",
  working_dir = "string",
  log_file = "string",
  lazy = "boolean",
  idle_timeout = { "string", "number" },
  ready = "string",
  ready_timeout = { "string", "number" },
  restart = "string",
  on_start = "function",
  on_ready = "function",
  on_exit = "function",
  binary = "string",
  name = "string",
}

---@param want string|string[]
---@param got any
---@return boolean
local function type_ok(want, got)
  if type(want) == "string" then
    return type(got) == want
  end
  return vim.tbl_contains(want, type(got))
end

--- Check one server's options; raises an error naming the server and key.
---@param name string
---@param cfg table
---@return sharedserver.ServerConfig
function M.validate_server(name, cfg)
  local function fail(msg)
    error(string.format("sharedserver: server '%s': %s", name, msg), 0)
  end
  if type(name) ~= "string" or not name:match("^[%w][%w_.%-]*$") then
    error(
      string.format(
        "sharedserver: invalid server name %s: use letters, digits, '.', '_' or '-', not starting with '.' or '-'",
        vim.inspect(name)
      ),
      0
    )
  end
  if type(cfg) ~= "table" then
    fail("its configuration must be a table, got " .. type(cfg))
  end
  for key, value in pairs(cfg) do
    local want = server_keys[key]
    if not want then
      fail(
        string.format(
          "unknown option `%s` (known: %s)",
          tostring(key),
          table.concat(vim.tbl_keys(server_keys), ", ")
        )
      )
    end
    if not type_ok(want, value) then
      local w = type(want) == "string" and want or table.concat(want, " or ")
      fail(string.format("option `%s` must be a %s, got %s", key, w, type(value)))
    end
  end
  if type(cfg.command) ~= "string" or cfg.command == "" then
    fail("option `command` is required (the program to run)")
  end
  if cfg.ready and not M.ready_ok(cfg.ready) then
    fail(
      string.format(
        "option `ready` must be tcp://HOST:PORT, http://HOST:PORT/PATH, unix:///PATH, log:REGEX or cmd:COMMAND, got %q",
        cfg.ready
      )
    )
  end
  if cfg.restart and not M.restart_ok(cfg.restart) then
    fail(
      string.format(
        'option `restart` must be "on-failure", "on-failure:MAX" (MAX > 0) or "no", got %q',
        cfg.restart
      )
    )
  end
  local args = {}
  for i, a in ipairs(cfg.args or {}) do
    if type(a) ~= "string" and type(a) ~= "number" then
      fail(string.format("args[%d] must be a string, got %s", i, type(a)))
    end
    args[i] = tostring(a)
  end
  local env = {}
  for k, v in pairs(cfg.env or {}) do
    if
      type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean")
    then
      fail("option `env` must map variable names to string values")
    end
    env[k] = tostring(v)
  end
  local out = vim.tbl_extend("force", {}, cfg)
  out.args = args
  out.env = env
  out.lazy = cfg.lazy == true
  out.name = nil
  return out
end

--- Whether `spec` has the form of a readiness check (the native module
--- checks the rest when the server starts).
---@param spec string
---@return boolean
function M.ready_ok(spec)
  for _, prefix in ipairs({ "tcp://", "http://", "unix://", "log:", "cmd:" }) do
    if spec:sub(1, #prefix) == prefix and #spec > #prefix then
      return true
    end
  end
  return false
end

---@param policy string
---@return boolean
function M.restart_ok(policy)
  if policy == "no" or policy == "never" or policy == "on-failure" then
    return true
  end
  local max = policy:match("^on%-failure:(%d+)$")
  return max ~= nil and tonumber(max) > 0
end

--- A definition from a config file (native `config()`) as server options.
---@param def sharedserver.ServerDef
---@return table
function M.from_def(def)
  local args = {}
  for i = 2, #def.command do
    args[#args + 1] = def.command[i]
  end
  return {
    command = def.command[1],
    args = args,
    env = def.env,
    working_dir = def.working_dir,
    log_file = def.log_file,
    idle_timeout = def.grace_period,
    ready = def.ready,
    ready_timeout = def.ready_timeout,
    restart = def.restart,
    lazy = def.lazy,
  }
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

--- Turn the accepted call forms of setup() into servers and options:
--- `setup({ servers = {...}, commands = ..., notify = ... })`,
--- `setup(servers, opts)` and `setup({ command = ... }, opts)` (one server,
--- named `opts.name`, its own `name` key, or "default").
---@param first table|nil
---@param second table|nil
---@return table<string, sharedserver.ServerConfig> servers, string[] order, sharedserver.Opts opts
function M.normalize(first, second)
  first = first or {}
  if type(first) ~= "table" then
    error("sharedserver: setup() expects a table, got " .. type(first), 0)
  end
  if second ~= nil and type(second) ~= "table" then
    error("sharedserver: setup()'s second argument (options) must be a table", 0)
  end
  local raw_servers, raw_opts
  if first.servers ~= nil then
    raw_servers = first.servers
    raw_opts = vim.tbl_extend("force", {}, first, second or {})
    raw_opts.servers = nil
    if type(raw_servers) ~= "table" then
      error("sharedserver: option `servers` must be a table of name = { command = ... }", 0)
    end
  elseif type(first.command) == "string" then
    local opts = second or {}
    local name = first.name or opts.name or M.defaults.name
    raw_servers = { [name] = first }
    raw_opts = opts
  else
    raw_servers = first
    raw_opts = second or {}
  end
  local known = { commands = true, notify = true, binary = true, name = true, project = true }
  for k in pairs(raw_opts) do
    if not known[k] then
      error(
        string.format(
          "sharedserver: unknown option `%s` (known: servers, commands, notify, binary, name, project; "
            .. "a server needs a table with `command`)",
          tostring(k)
        ),
        0
      )
    end
  end
  if raw_opts.commands ~= nil and type(raw_opts.commands) ~= "boolean" then
    error("sharedserver: option `commands` must be true or false", 0)
  end
  if raw_opts.binary ~= nil and type(raw_opts.binary) ~= "string" then
    error("sharedserver: option `binary` must be a path string", 0)
  end
  if raw_opts.project ~= nil and type(raw_opts.project) ~= "boolean" then
    error("sharedserver: option `project` must be true or false", 0)
  end
  ---@type sharedserver.Opts
  local opts = {
    commands = raw_opts.commands ~= false,
    notify = validate_notify(raw_opts.notify),
    binary = raw_opts.binary,
    project = raw_opts.project == true,
  }
  local servers, order = {}, {}
  for name, cfg in pairs(raw_servers) do
    servers[name] = M.validate_server(name, cfg)
    order[#order + 1] = name
  end
  table.sort(order)
  return servers, order, opts
end

--- Absolute form of a user path ("~" and $VARS expanded, relative to cwd).
---@param path string
---@return string
function M.expand(path)
  return vim.fn.fnamemodify(vim.fn.expand(path), ":p")
end

--- The spec the native start() takes for a server.
---@param name string
---@param cfg sharedserver.ServerConfig
---@param binary string|nil
---@return sharedserver.NativeSpec
function M.native_spec(name, cfg, binary)
  local command = cfg.command
  if command:sub(1, 2) == "~/" then
    command = vim.fn.expand(command)
  end
  local working_dir = nil
  if cfg.working_dir then
    working_dir = M.expand(cfg.working_dir):gsub("(.)/$", "%1")
    if vim.fn.isdirectory(working_dir) ~= 1 then
      error(
        string.format(
          "sharedserver: server '%s': working_dir %s is not a directory",
          name,
          working_dir
        ),
        0
      )
    end
  end
  return {
    command = command,
    args = cfg.args,
    env = cfg.env,
    working_dir = working_dir,
    log_file = cfg.log_file and M.expand(cfg.log_file) or nil,
    grace_period = cfg.idle_timeout,
    ready = cfg.ready,
    ready_timeout = cfg.ready_timeout,
    restart = cfg.restart,
    binary = binary,
    metadata = "nvim",
  }
end

return M
