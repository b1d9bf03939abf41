---@mod sharedserver.binary Finds the `sharedserver` executable
---
--- The binary is needed only to run a server's watcher, that is on a cold
--- start; attaching, detaching and status run in-process.

local compat = require("sharedserver.compat")
local loader = require("sharedserver.loader")

local M = {}

--- The last successful resolution for each `binary` option ("" for none).
---@type table<string, { path: string, source: string }>
local found = {}

--- Candidate locations in resolution order, each with where it came from.
---@param override string|nil the `binary` option
---@return { path: string, source: string }[]
function M.candidates(override)
  local home = vim.fn.expand("~")
  local out = {}
  if override and override ~= "" then
    out[#out + 1] = { path = vim.fn.expand(override), source = "the `binary` option" }
    return out
  end
  out[#out + 1] = {
    path = compat.join(loader.root, "target", "release", "sharedserver"),
    source = "the plugin's own build",
  }
  local on_path = vim.fn.exepath("sharedserver")
  if on_path ~= "" then
    out[#out + 1] = { path = on_path, source = "$PATH" }
  end
  for _, dir in ipairs({
    home .. "/.cargo/bin",
    home .. "/.local/bin",
    "/usr/local/bin",
    "/opt/homebrew/bin",
  }) do
    out[#out + 1] = { path = dir .. "/sharedserver", source = dir }
  end
  return out
end

--- The first executable candidate. With an override, only the override counts:
--- a wrong `binary` option is reported, never silently replaced.
---@param override string|nil
---@return string|nil path, string|nil source_or_error
function M.resolve(override)
  local key = override or ""
  local hit = found[key]
  -- Starting ten servers resolves ten times; searching $PATH each time cost
  -- more than the attaches. A hit is still checked, so a binary removed
  -- since is looked for again.
  if hit and compat.is_executable(hit.path) then
    return hit.path, hit.source
  end
  local list = M.candidates(override)
  for _, c in ipairs(list) do
    if compat.is_executable(c.path) then
      found[key] = c
      return c.path, c.source
    end
  end
  if override and override ~= "" then
    return nil,
      string.format(
        "the `binary` option points to %s, which is not an executable file",
        list[1].path
      )
  end
  return nil,
    "the sharedserver binary was not found (looked in the plugin's target/release, $PATH, "
      .. "~/.cargo/bin, ~/.local/bin, /usr/local/bin, /opt/homebrew/bin); build it with "
      .. "`sh build.sh` in "
      .. loader.root
      .. " or install it with `cargo install --path "
      .. loader.root
      .. "`"
end

return M
