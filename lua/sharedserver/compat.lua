---@mod sharedserver.compat Shims over Neovim API differences (0.7 and later)

local M = {}

--- libuv bindings: `vim.uv` from 0.10, `vim.loop` before.
M.uv = vim.uv or vim.loop

--- Join path segments with "/" (vim.fs.joinpath needs 0.10).
---@param ... string
---@return string
function M.join(...)
  local path = table.concat({ ... }, "/")
  return (path:gsub("//+", "/"))
end

---@param path string
---@return boolean
function M.is_file(path)
  local stat = M.uv.fs_stat(path)
  return stat ~= nil and stat.type == "file"
end

---@param path string
---@return boolean
function M.is_executable(path)
  return M.is_file(path) and vim.fn.executable(path) == 1
end

--- The last `n` lines of a text file (reads at most its last 64 KiB).
---@param path string
---@param n integer
---@return string[]|nil
function M.tail(path, n)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local size = f:seek("end")
  f:seek("set", math.max(0, size - 65536))
  local text = f:read("*a") or ""
  f:close()
  local lines = vim.split(text, "\n", { plain = true })
  while #lines > 0 and lines[#lines] == "" do
    table.remove(lines)
  end
  local out = {}
  for i = math.max(1, #lines - n + 1), #lines do
    out[#out + 1] = lines[i]
  end
  return out
end

---@class sharedserver.Health
---@field start fun(msg: string)
---@field ok fun(msg: string)
---@field info fun(msg: string)
---@field warn fun(msg: string, advice?: string|string[])
---@field error fun(msg: string, advice?: string|string[])

--- vim.health.start/ok/... (0.10+), vim.health.report_* (0.8, 0.9), or
--- require("health").report_* (0.7), behind one interface.
---@return sharedserver.Health
function M.health()
  local h = vim.health
  if h and h.start then
    return { start = h.start, ok = h.ok, info = h.info, warn = h.warn, error = h.error }
  end
  if not (h and h.report_start) then
    h = require("health")
  end
  return {
    start = h.report_start,
    ok = h.report_ok,
    info = h.report_info,
    warn = h.report_warn,
    error = h.report_error,
  }
end

return M
