---@mod sharedserver.loader Finds and opens the native module
---
--- The library is opened by its exact path with `package.loadlib`, never
--- through `package.cpath`: a stale or foreign `sharedserver/native.so`
--- earlier on the cpath would otherwise be loaded silently. The path that
--- was opened is kept for :checkhealth.

local compat = require("sharedserver.compat")

local M = {}

--- The version of this Lua code (equal to the crate version).
M.version = require("sharedserver.version")

--- The plugin's root directory (the one holding lua/, plugin/, build.lua).
M.root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h")

--- Where build.lua installs the native module.
M.path = compat.join(M.root, "lua", "sharedserver", "native.so")

--- The path the native module was opened from, once loaded.
---@type string|nil
M.loaded_path = nil

---@type sharedserver.Native|nil
local native = nil

--- How to (re)build the native module, as a command line.
---@return string
function M.build_hint()
  return string.format(
    "run `:Lazy build sharedserver`, or `nvim -l build.lua` in %s (Neovim 0.7/0.8: "
      .. "`nvim --headless -c 'luafile build.lua' -c q`)",
    M.root
  )
end

--- Open the native module, or raise an error that says how to fix it. Its
--- functions return `nil, message` on failure: use them through
--- sharedserver.native, which raises the message instead.
---@return table
function M.load()
  if native then
    return native
  end
  if not compat.is_file(M.path) then
    error(
      string.format("sharedserver: native module not found at %s; %s", M.path, M.build_hint()),
      0
    )
  end
  local open, err = package.loadlib(M.path, "luaopen_sharedserver_native")
  if not open then
    error(
      string.format(
        "sharedserver: cannot open native module %s (%s); %s",
        M.path,
        tostring(err),
        M.build_hint()
      ),
      0
    )
  end
  local mod = open()
  local v = mod.version()
  if v ~= M.version then
    error(
      string.format(
        "sharedserver: native module %s is version %s but the Lua code is %s; rebuild it: %s",
        M.path,
        v,
        M.version,
        M.build_hint()
      ),
      0
    )
  end
  native = mod
  M.loaded_path = M.path
  -- Servers without a `binary` of their own restore a lost watcher with the
  -- global one (a server's own is passed per call by start.lua).
  mod.set_binary(
    (require("sharedserver.binary").resolve(require("sharedserver.state").opts.binary))
  )
  return mod
end

--- Open the module: its functions as sharedserver.native wraps them (they
--- raise one-line errors), or nil and the message saying why it cannot open.
---@return sharedserver.Native|nil, string|nil
function M.try_load()
  local ok, res = pcall(M.load)
  if ok then
    return require("sharedserver.native"), nil
  end
  return nil, tostring(res)
end

return M
