---@mod sharedserver.binary Finds the `sharedserver` executable
---
--- The binary is needed only to run a server's watcher, that is on a cold
--- start; attaching, detaching and status run in-process.

local compat = require("sharedserver.compat")
local loader = require("sharedserver.loader")

local M = {}

--- Candidate locations in resolution order, each with where it came from.
--- Lazy: the caller stops at the first executable one, so a plugin with its
--- own build never pays for the $PATH search (ten servers started used to
--- search it ten times).
---@param override string|nil the `binary` option
---@return fun(): { path: string, source: string }|nil
function M.candidates(override)
  if override and override ~= "" then
    local once = { path = vim.fn.expand(override), source = "the `binary` option" }
    return function()
      local c = once
      once = nil
      return c
    end
  end
  local steps = {
    function()
      -- build.lua builds into $CARGO_TARGET_DIR when it is set (relative
      -- to the plugin's root, as cargo reads it there). It comes first: a
      -- target/ left from a build before the variable was set is stale.
      local dir = vim.env.CARGO_TARGET_DIR
      if dir == nil or dir == "" then
        return nil
      end
      if dir:sub(1, 1) ~= "/" then
        dir = compat.join(loader.root, dir)
      end
      return {
        path = compat.join(dir, "release", "sharedserver"),
        source = "the plugin's own build ($CARGO_TARGET_DIR)",
      }
    end,
    function()
      return {
        path = compat.join(loader.root, "target", "release", "sharedserver"),
        source = "the plugin's own build",
      }
    end,
    function()
      local on_path = vim.fn.exepath("sharedserver")
      return on_path ~= "" and { path = on_path, source = "$PATH" } or nil
    end,
  }
  for _, dir in ipairs({ "~/.cargo/bin", "~/.local/bin", "/usr/local/bin", "/opt/homebrew/bin" }) do
    steps[#steps + 1] = function()
      local full = vim.fn.expand(dir)
      return { path = full .. "/sharedserver", source = full }
    end
  end
  local i = 0
  ---@return { path: string, source: string }|nil
  return function()
    while i < #steps do
      i = i + 1
      local c = steps[i]()
      if c then
        return c
      end
    end
    return nil
  end
end

--- The first executable candidate. With an override, only the override counts:
--- a wrong `binary` option is reported, never silently replaced.
---@param override string|nil
---@return string|nil path, string|nil source_or_error
function M.resolve(override)
  local tried = {}
  for c in M.candidates(override) do
    if compat.is_executable(c.path) then
      return c.path, c.source
    end
    tried[#tried + 1] = c.path
  end
  if override and override ~= "" then
    return nil,
      string.format("the `binary` option points to %s, which is not an executable file", tried[1])
  end
  return nil,
    "the sharedserver binary was not found (looked for "
      .. table.concat(tried, ", ")
      .. ", and on $PATH); build it with `sh build.sh` in "
      .. loader.root
      .. " or install it with `cargo install --path "
      .. loader.root
      .. "`"
end

return M
