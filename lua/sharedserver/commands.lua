---@mod sharedserver.commands The :Server* user commands

local M = {}

---@class sharedserver.CommandSpec
---@field nargs integer|string
---@field bang boolean
---@field complete "configured"|"all"|"attached"|nil
---@field desc string

--- Keep in sync with plugin/sharedserver.lua, which defines the same
--- commands without loading any module.
---@type table<string, sharedserver.CommandSpec>
M.specs = {
  ServerStart = {
    nargs = 1,
    bang = false,
    complete = "configured",
    desc = "Start (or attach to) a server",
  },
  ServerStop = {
    nargs = 1,
    bang = true,
    -- Without !, only the servers this Neovim can detach from; with !, any.
    complete = "attached",
    desc = "Detach this Neovim from a server (! stops it for every client)",
  },
  ServerRestart = {
    nargs = 1,
    bang = false,
    complete = "configured",
    desc = "Restart a server (new process)",
  },
  ServerStatus = {
    nargs = "?",
    bang = false,
    complete = "all",
    desc = "Show server status in a float",
  },
  ServerList = { nargs = 0, bang = false, desc = "List servers in the message area" },
  ServerLog = {
    nargs = 1,
    bang = false,
    complete = "all",
    desc = "Open a server's log in a new split",
  },
  ServerStopAll = {
    nargs = 0,
    bang = true,
    desc = "Detach from every configured server (! stops them all)",
  },
}

---@param msg string
local function fail(msg)
  if not require("sharedserver").options().notify.on_error then
    vim.api.nvim_err_writeln("sharedserver: " .. msg)
  end
end

--- Server names for completion: configured ones, with `which == "all"`
--- those in the lock dir too, with "attached" only those this Neovim is
--- attached to.
---@param which "configured"|"all"|"attached"
---@param lead string
---@return string[]
function M.names(which, lead)
  local ss = require("sharedserver")
  local seen, out = {}, {}
  local function add(name)
    if name and not seen[name] and name:sub(1, #lead) == lead then
      seen[name] = true
      out[#out + 1] = name
    end
  end
  for _, name in ipairs(ss.list()) do
    if which ~= "attached" or ss.status(name).attached then
      add(name)
    end
  end
  if which == "all" then
    local n = require("sharedserver.loader").try_load()
    if n then
      local ok, all = pcall(n.list)
      for _, st in ipairs(ok and all or {}) do
        add(st.name)
      end
    end
  end
  table.sort(out)
  return out
end

---@param cmd string
---@param lead string
---@param line string|nil the whole command line (says whether ! was given)
---@return string[]
function M.complete(cmd, lead, line)
  local spec = M.specs[cmd]
  if not spec or not spec.complete then
    return {}
  end
  local which = spec.complete
  if which == "attached" and line and line:find(cmd .. "!", 1, true) then
    which = "all"
  end
  return M.names(which, lead or "")
end

--- A server this Neovim can show: configured here, running, or with a
--- recorded exit in the lock dir.
---@param name string
---@return boolean
local function known(name)
  local ss = require("sharedserver")
  if ss.config(name) then
    return true
  end
  local n = require("sharedserver.loader").try_load()
  local ok, st = pcall(function()
    return n and n.status(name)
  end)
  return ok and st ~= nil and (st.state ~= "stopped" or st.last_exit ~= nil)
end

---@param cmd string
---@param o { args: string, bang: boolean }
function M.run(cmd, o)
  local ss = require("sharedserver")
  local name = vim.trim(o.args or "")
  if cmd == "ServerStart" then
    local ok, err = ss.start(name)
    if not ok then
      fail(err --[[@as string]])
    end
  elseif cmd == "ServerStop" then
    local ok, err = ss.stop(name, { force = o.bang })
    if not ok then
      fail(err --[[@as string]])
    end
  elseif cmd == "ServerRestart" then
    local ok, err = ss.restart(name)
    if not ok then
      fail(err --[[@as string]])
    end
  elseif cmd == "ServerStopAll" then
    local ok, errs = ss.stop_all({ force = o.bang })
    if not ok then
      fail(table.concat(errs, "\n"))
    end
  elseif cmd == "ServerLog" then
    local ok, err = ss.open_log(name)
    if not ok then
      vim.api.nvim_err_writeln("sharedserver: " .. err)
    end
  elseif cmd == "ServerStatus" then
    if name ~= "" and not known(name) then
      vim.api.nvim_err_writeln(
        string.format(
          "sharedserver: no server named '%s' (none is configured, running or recorded; see :ServerStatus)",
          name
        )
      )
      return
    end
    require("sharedserver.status").open(name ~= "" and name or nil)
  elseif cmd == "ServerList" then
    local lines = require("sharedserver.status").lines(nil, { footer = false })
    local chunks = {}
    for _, l in ipairs(lines) do
      chunks[#chunks + 1] = { l .. "\n" }
    end
    vim.api.nvim_echo(chunks, false, {})
  end
end

--- Define every command.
function M.create()
  for cmd, spec in pairs(M.specs) do
    local def = { nargs = spec.nargs, bang = spec.bang, desc = spec.desc }
    if spec.complete then
      def.complete = function(lead, line)
        return M.complete(cmd, lead, line)
      end
    end
    vim.api.nvim_create_user_command(cmd, function(o)
      M.run(cmd, o)
    end, def)
  end
end

--- Remove every command (setup with `commands = false`).
function M.delete()
  for cmd in pairs(M.specs) do
    pcall(vim.api.nvim_del_user_command, cmd)
  end
end

return M
