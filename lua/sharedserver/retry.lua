---@mod sharedserver.retry Finishing an operation that found its server busy
---
--- The native module never makes the editor wait: a lock held by another
--- process (a `use` starting the server, or one stuck with Ctrl-Z) or a
--- server that is still stopping comes back at once as a `retry` value (see
--- native.lua). The operation is then made again from a timer, with
--- backoff, for at most TOTAL_MS; if it is still busy then, the caller
--- reports it once, naming the lock's holder.

local compat = require("sharedserver.compat")

local M = {}

--- The first delay, the longest one, and how long to keep trying (ms).
M.FIRST_MS, M.MAX_MS, M.TOTAL_MS = 10, 1000, 30000

--- Call `op` until it returns a value or a failure that does not pass.
--- `op()` returns `value, err, retry` (as native.try does); `done(value,
--- err)` gets the outcome, from a timer when `op` was busy. Returns true when
--- the first call finished (done has already run), false when it is retried.
---@param op fun(): any, string|nil, sharedserver.Retry|nil
---@param done fun(value: any, err: string|nil)
---@return boolean finished
function M.run(op, done)
  local value, err, retry = op()
  if not retry then
    done(value, err)
    return true
  end
  local start, delay = compat.uv.now(), M.FIRST_MS
  local function again()
    compat.uv.update_time()
    value, err, retry = op()
    if retry and compat.uv.now() - start < M.TOTAL_MS then
      delay = math.min(delay * 2, M.MAX_MS)
      vim.defer_fn(again, delay)
      return
    end
    done(value, err)
  end
  vim.defer_fn(again, delay)
  return false
end

return M
