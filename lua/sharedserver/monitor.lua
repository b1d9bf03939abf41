---@mod sharedserver.monitor Notices servers stopping, at no idle cost
---
--- One inotify/kqueue watch (libuv fs_event) on the lock directory. A server's
--- record `<name>.json` is replaced on every change and removed when the
--- server has stopped, with `<name>.last` written beside it. Each event is
--- read at once, in the event's own callback: while Neovim waits at a
--- hit-enter prompt it still runs these callbacks, but no scheduled one, so
--- a record read later would show only how a series of restarts ended. The
--- views read are passed on, per name and in order, on the main loop.
--- Nothing polls and nothing is spawned while idle.

local compat = require("sharedserver.compat")

local M = {}

---@type userdata|nil
local handle = nil
---@type string|nil
local watched_dir = nil
--- The views read since the last flush, per name, oldest first.
---@type table<string, sharedserver.Status[]>
local pending = {}
local scheduled = false

--- The same process with the same last exit: the later view replaces the
--- earlier, so a blocked Neovim keeps one view per process and state at most.
---@param a sharedserver.Status
---@param b sharedserver.Status
---@return boolean
local function same_run(a, b)
  local ea, eb = a.last_exit, b.last_exit
  return a.pid == b.pid
    and a.state == b.state
    and (ea and ea.pid) == (eb and eb.pid)
    and (ea and ea.kind) == (eb and eb.kind)
end

--- Start watching `dir` (no-op if already watching it). On each change to a
--- server's files, `read(name)` runs at once (in a fast callback: it must
--- call no Vim function) and returns its view, or nil for a server this
--- instance does not follow; `on_change(name, views)` then runs on the main
--- loop with the views read since (empty when reading failed).
---@param dir string
---@param read fun(name: string): sharedserver.Status|nil, boolean|nil
---@param on_change fun(name: string, views: sharedserver.Status[])
---@return boolean ok, string|nil err
function M.start(dir, read, on_change)
  if handle and watched_dir == dir then
    return true
  end
  M.stop()
  local h = compat.uv.new_fs_event()
  if not h then
    return false, "cannot create a file system watcher"
  end
  local function flush()
    scheduled = false
    for _, name in ipairs(vim.tbl_keys(pending)) do
      local views = M.take(name)
      if views then
        on_change(name, views)
      end
    end
  end
  local ok, err = h:start(dir, {}, function(e, filename)
    if e or not filename then
      return
    end
    local name = filename:match("^([^.].*)%.json$") or filename:match("^([^.].*)%.last$")
    if not name then
      return
    end
    local view, follows = read(name)
    if not follows then
      return
    end
    local views = pending[name] or {}
    pending[name] = views
    if view then
      if views[#views] and same_run(views[#views], view) then
        views[#views] = view
      else
        views[#views + 1] = view
      end
    end
    if not scheduled then
      scheduled = true
      vim.schedule(flush)
    end
  end)
  if not ok then
    h:close()
    return false, tostring(err)
  end
  handle, watched_dir = h, dir
  return true
end

--- The views of `name` read and not yet passed on (nil if none), which
--- are then never passed on: a refresh that reads the record afresh applies
--- them first, so that it never reports an end before the restarts that led
--- to it.
---@param name string
---@return sharedserver.Status[]|nil
function M.take(name)
  local views = pending[name]
  pending[name] = nil
  return views
end

function M.stop()
  if handle then
    handle:stop()
    if not handle:is_closing() then
      handle:close()
    end
  end
  handle, watched_dir = nil, nil
end

---@return boolean
function M.active()
  return handle ~= nil
end

return M
