---@mod sharedserver.notify What the user is told: notifications and callbacks
---
--- Every message goes through one gate, so the `notify` options decide per
--- kind whether it is shown. User callbacks run protected: a failing one is
--- reported as an error, never raised into the plugin's own code paths.

local state = require("sharedserver.state")

local M = {}

---@alias sharedserver.NotifyKind "on_start"|"on_attach"|"on_stop"|"on_error"

--- While later() runs: what send() would show, in order.
---@type { [1]: string, [2]: integer }[]|nil
local held = nil

--- Show `msg` if the `notify` option for `kind` is on.
---@param kind sharedserver.NotifyKind
---@param msg string
---@param level integer|nil default INFO
function M.send(kind, msg, level)
  if not state.opts.notify[kind] then
    return
  end
  level = level or vim.log.levels.INFO
  if held then
    -- One cause met by several calls of a batch (a missing native module,
    -- an unsafe lock dir) is said once.
    for _, m in ipairs(held) do
      if m[1] == msg then
        return
      end
    end
    held[#held + 1] = { msg, level }
    return
  end
  vim.notify("sharedserver: " .. msg, level, { title = "sharedserver" })
end

--- Run `f`, and show what it says just after, from the event loop. VimEnter
--- runs its batch so: an error shown inside an autocommand comes under an
--- "Error detected while processing VimEnter Autocommands" header and a
--- prompt to press ENTER before the editor appears. Its plain news (servers
--- started) shares one line, so three servers do not make that prompt
--- either; warnings and errors keep a message each, and a message said twice
--- is shown once.
---@param f fun()
function M.later(f)
  if held then
    return f() -- already inside one
  end
  held = {}
  local ok, err = pcall(f)
  local said = held
  held = nil
  if #said > 0 then
    vim.schedule(function()
      local news = {} ---@type string[]
      for _, m in ipairs(said) do
        if m[2] == vim.log.levels.INFO then
          news[#news + 1] = m[1]
        else
          vim.notify("sharedserver: " .. m[1], m[2], { title = "sharedserver" })
        end
      end
      if #news > 0 then
        vim.notify("sharedserver: " .. table.concat(news, "; "), vim.log.levels.INFO, {
          title = "sharedserver",
        })
      end
    end)
  end
  if not ok then
    error(err, 0)
  end
end

--- Run a user callback, reporting (not raising) its error.
---@param what string the callback's name, for the message
---@param fn function|nil
---@param ... any
function M.callback(what, fn, ...)
  if not fn then
    return
  end
  local ok, err = pcall(fn, ...)
  if not ok then
    M.send("on_error", what .. " callback failed: " .. tostring(err), vim.log.levels.ERROR)
  end
end

--- Strip the "sharedserver: " prefix native and loader errors carry, since
--- send() adds its own.
---@param err any
---@return string
function M.errmsg(err)
  return (tostring(err):gsub("^sharedserver: ", ""))
end

--- Report a failed operation (on_error gate) and return the `false, msg`
--- pair that the Lua API's operations return on failure.
---@param err any
---@return false
---@return string
function M.failed(err)
  local msg = M.errmsg(err)
  M.send("on_error", msg, vim.log.levels.ERROR)
  return false, msg
end

return M
