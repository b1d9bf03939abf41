---@mod sharedserver.monitor Notices servers stopping, at no idle cost
---
--- One inotify/kqueue watch (libuv fs_event) on the lock directory. A server's
--- record `<name>.json` is replaced on every change and removed when the
--- server has stopped, with `<name>.last` written beside it; each such event
--- is passed on, coalesced per name, on the main loop. Nothing polls and
--- nothing is spawned while idle.

local compat = require("sharedserver.compat")

local M = {}

---@type userdata|nil
local handle = nil
---@type string|nil
local watched_dir = nil
---@type table<string, true>
local pending = {}
local scheduled = false

--- Start watching `dir` (no-op if already watching it). `on_change(name)` runs
--- on the main loop after a server's files changed.
---@param dir string
---@param on_change fun(name: string)
---@return boolean ok, string|nil err
function M.start(dir, on_change)
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
    local names = pending
    pending = {}
    for name in pairs(names) do
      on_change(name)
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
    pending[name] = true
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
