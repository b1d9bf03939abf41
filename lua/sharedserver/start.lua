---@mod sharedserver.start Starting a server, or attaching to one that runs
---
--- The native module starts the server (or finds it running) under the lock
--- dir's rules; this module records in the registry that this instance now
--- holds a reference, starts the lock dir watch, reports what happened, and
--- hands the server to ready.lua. Errors are notified and returned.

-- Loaded on first use: at VimEnter only what the servers' answers need
-- (doc/PERFORMANCE.md, row 3).
local lazy = require("sharedserver.lazy")
local compat = lazy("sharedserver.compat")
local config = require("sharedserver.config")
local exits = lazy("sharedserver.exits")
local notify = require("sharedserver.notify")
local ready = lazy("sharedserver.ready")
local retry = lazy("sharedserver.retry")
local refresh = lazy("sharedserver.refresh")
local state = require("sharedserver.state")
local statusline = lazy("sharedserver.statusline")

local M = {}

--- The sharedserver binary for `e`: its own `binary` option, else the global one.
---@param e sharedserver.Entry
---@return string|nil path, string|nil source_or_error
local function binary_for(e)
  return require("sharedserver.binary").resolve(e.config.binary or state.opts.binary)
end

--- This instance is now attached to `e`'s server (status `st`): remember
--- it and watch the lock dir.
---@param e sharedserver.Entry
---@param st sharedserver.Status
local function now_attached(e, st)
  refresh.catch_up(e.name)
  e.attached, e.pid, e.mine, e.state = true, st.pid, true, st.state
  e.log_file = st.log_file or e.log_file
  e.restarts = st.restarts or 0
  -- Crashes before this attach are not news. (The status returned by
  -- start/incref already carries the previous exit.)
  e.crash_key = st.last_exit and exits.crash_key(st.last_exit)
  refresh.watch()
end

--- attach_if_running's incref answered `res`: record and report it.
---@param e sharedserver.Entry
---@param name string
---@param res sharedserver.Status
local function joined(e, name, res)
  now_attached(e, res)
  notify.send(
    "on_attach",
    string.format("attached to '%s' (pid %d, refcount %d)", name, res.pid, res.refcount)
  )
  ready.now_or_wait(e, res)
end

--- Attach to `name` if it is running (the lazy servers' VimEnter action).
---@param name string
---@return boolean attached
function M.attach_if_running(name)
  local e = state.entry(name)
  local n = require("sharedserver.native")
  local st = n.status(name)
  if st.state ~= "active" and st.state ~= "grace" and st.state ~= "starting" then
    return false
  end
  -- The binary is not needed to attach, but lets the library restore a
  -- dead watcher.
  local opts = { binary = (binary_for(e)) }
  local finished = retry.run(function()
    return n.try("incref", name, nil, nil, opts)
  end, function(res)
    if res then
      joined(e, name, res)
    end
    -- Else it stopped in between, or stayed busy: a lazy server is then
    -- left alone.
  end)
  return finished and e.attached == true
end

--- What start() does once the native call has answered: record the
--- attach, report it, and hand the server to ready.lua.
--- `recheck` collects the names to look at once more (enter() does that
--- for its whole batch); without it, this one is looked at on its own.
---@param name string
---@param st sharedserver.Status
---@param recheck? string[]
local function started(name, st, recheck)
  local e = state.servers[name]
  now_attached(e, st)
  -- An exit between start() returning and the watch starting raised no
  -- event: look once more.
  if recheck then
    recheck[#recheck + 1] = name
  else
    vim.schedule(function()
      refresh.refresh(name)
    end)
  end
  if st.started then
    e.started_pid, e.started_ns = st.pid, compat.uv.hrtime()
    local waiting = st.state == "starting" and st.ready
    notify.send(
      "on_start",
      string.format(
        "started '%s' (pid %d)%s",
        name,
        st.pid,
        waiting and (", waiting for " .. st.ready) or ""
      )
    )
    notify.callback("on_start", e.config.on_start, st.pid)
  else
    notify.send(
      "on_attach",
      string.format("attached to '%s' (pid %d, refcount %d)", name, st.pid, st.refcount)
    )
    if st.warning then
      -- Joined a server started with other options: once per attach, under
      -- the on_error gate (on by default), since it may not be what was meant.
      notify.send("on_error", st.warning, vim.log.levels.WARN)
    end
  end
  ready.now_or_wait(e, st)
end

--- Act on one answer of native.enter (see _meta.lua's sharedserver.Outcome).
---@param a sharedserver.EnterAnswer
---@param recheck string[]
local function answered(a, recheck)
  local e = state.servers[a.name]
  if a.outcome == "started" or a.outcome == "joined" then
    started(a.name, a.status, recheck)
  elseif a.outcome == "no_binary" then
    local _, why = binary_for(e)
    notify.failed(string.format("cannot start '%s': %s", a.name, why))
  elseif a.outcome == "failed" and a.retry then
    if e.config.lazy then
      pcall(M.attach_if_running, a.name)
    else
      M.start(a.name)
    end
  elseif a.outcome == "failed" then
    notify.failed(a.error)
  end
  -- "not_running": a lazy server nobody runs is left alone.
end

--- The native batch item for `e`.
---@param name string
---@param e sharedserver.Entry
---@return sharedserver.EnterItem
local function item(name, e)
  -- Absent: the global binary (loader.lua). A server's own option that
  -- names no executable gives `false`: never another binary instead.
  local bin = nil ---@type string|false|nil
  if e.config.binary then
    bin = binary_for(e) or false
  end
  return {
    name = name,
    spec = config.plain(e.config),
    lazy = e.config.lazy == true,
    binary = bin,
    origin = e.source ~= "lua" and e.source or nil,
  }
end

--- The batch items of `names` not entered yet; with `mark`, they are then.
---@param names string[]
---@param mark boolean
---@return sharedserver.EnterItem[]
local function items_of(names, mark)
  local items = {} ---@type sharedserver.EnterItem[]
  for _, name in ipairs(names) do
    local e = state.servers[name]
    if e and not e.entered then
      if mark then
        e.entered = true
      end
      items[#items + 1] = item(name, e)
    end
  end
  return items
end

--- Ahead of VimEnter (from setup()): the native module joins the servers
--- of `names` that run, on a thread of its own, while Neovim goes on
--- starting; enter() then takes those joins (doc/PERFORMANCE.md, row 3).
--- Nothing is reported here, and a failure is enter()'s to find again.
---@param names string[]
function M.prepare(names)
  local items = items_of(names, false)
  if #items > 0 then
    require("sharedserver.native").try("prepare", items)
  end
end

--- The VimEnter action for `names` (those not entered yet), in one native
--- call: start each plain server, or attach to it if it runs; attach to
--- each lazy one that runs. A server that is busy (see start()) is then
--- finished from a timer, by start() or attach_if_running().
---@param names string[]
function M.enter(names)
  local items = items_of(names, true)
  if #items == 0 then
    return
  end
  local n = require("sharedserver.native")
  local answers, err = n.try("enter", items)
  if not answers then
    notify.failed(err)
    return
  end
  local recheck = {} ---@type string[]
  statusline.held(function()
    for _, a in ipairs(answers) do
      answered(a, recheck)
    end
  end)
  if #recheck > 0 then
    vim.schedule(function()
      for _, name in ipairs(recheck) do
        refresh.refresh(name)
      end
    end)
  end
end

--- Start the server, or attach to it if it already runs (for lazy servers
--- too). This instance then holds a reference until it detaches or exits.
--- Returns at once: a server with a `ready` check is then "starting", and
--- on_ready runs when it passes. If the server is busy (its lock held by
--- another process, or it is still stopping), returns `true` with no status
--- and finishes from a timer (retry.lua): on_start or on_attach then, or
--- one error naming the lock's holder if it stays busy.
---@param name string
---@return boolean ok, sharedserver.Status|string|nil status_or_error
function M.start(name)
  local ok, res = pcall(function()
    local e = state.entry(name)
    local bin, why = binary_for(e)
    local n = require("sharedserver.native")
    -- Without the binary only a running server can be joined: say why a
    -- stopped one cannot start, rather than the library's generic words.
    if not bin and n.status(name).state == "stopped" then
      error(string.format("cannot start '%s': %s", name, why), 0)
    end
    local origin = e.source ~= "lua" and e.source or nil
    local plain = config.plain(e.config)
    return function()
      return n.try("start", name, plain, { binary = bin, origin = origin })
    end
  end)
  if not ok then
    return notify.failed(res)
  end
  local e = state.servers[name]
  if e.retrying then
    return true, nil -- an earlier start is being retried
  end
  local out_ok, out ---@type boolean, sharedserver.Status|string|nil
  e.retrying = true
  local finished = retry.run(res, function(st, err)
    e.retrying = false
    if st == nil then
      out_ok, out = notify.failed(err)
      return
    end
    started(name, st)
    out_ok, out = true, st
  end)
  if not finished then
    return true, nil
  end
  return out_ok, out
end

return M
