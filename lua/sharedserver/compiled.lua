---@mod sharedserver.compiled The plugin's modules, loaded from bytecode
---
--- Parsing Lua source is most of what the plugin's Lua costs at start-up
--- (about 0.3 ms per module here, against 0.05 ms to load the same module
--- as bytecode: doc/PERFORMANCE.md, row 3). build.lua therefore compiles the
--- modules into bytecode/ at the plugin's root, with a manifest naming each
--- source's size and modification time (compile.lua). The searcher here
--- loads a module from there only while its source is unchanged and the Lua
--- running is the one that compiled it, in the same place; anything else (no
--- build yet, a `git pull` without a rebuild, another Neovim, a moved
--- plugin) falls through to the normal search, so the bytecode can make
--- start-up faster but never run stale code.

local uv = vim.uv or vim.loop

local M = {}

--- The plugin's root (the one holding lua/ and bytecode/).
M.root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h")

--- Where build.lua writes the bytecode and its manifest.
M.dir = M.root .. "/bytecode"

--- The Lua that compiles and loads: bytecode from another does not load.
---@return string
function M.lua_id()
  return jit and jit.version or _VERSION
end

---@class sharedserver.CompiledModule
---@field [1] string the source, relative to the root
---@field [2] integer its size
---@field [3] integer its modification time (seconds)
---@field [4] integer and nanoseconds

---@class sharedserver.Manifest
---@field lua string the Lua that compiled it (jit.version)
---@field root string the plugin's root then (the bytecode names its sources by path)
---@field modules table<string, sharedserver.CompiledModule>

--- Modules loaded from bytecode so far, by name (for :checkhealth and tests).
---@type table<string, true>
M.loaded = {}

---@type sharedserver.Manifest|nil
local manifest = nil
local installed = false

--- The source's size and modification time, as the manifest records them.
---@param path string
---@return integer|nil size, integer|nil sec, integer|nil nsec
function M.stamp(path)
  local st = uv.fs_stat(path)
  if not st then
    return nil
  end
  return st.size, st.mtime.sec, st.mtime.nsec
end

--- Whether a module's source is as it was compiled.
---@param m sharedserver.CompiledModule
---@return boolean
function M.fresh(m)
  local size, sec, nsec = M.stamp(M.root .. "/" .. m[1])
  return size == m[2] and sec == m[3] and nsec == m[4]
end

--- The manifest build.lua wrote, or nil.
---@return sharedserver.Manifest|nil
function M.manifest()
  local read = loadfile(M.dir .. "/manifest.lua")
  local ok, m = pcall(read or error)
  if ok and type(m) == "table" and type(m.modules) == "table" then
    return m
  end
  return nil
end

--- The package.loaders entry: the module's bytecode as a loader function,
--- or nil (the next searcher then looks for the source).
---@param name string
---@return function|nil
local function searcher(name)
  local m = manifest and manifest.modules[name]
  if not m then
    return nil
  end
  if not M.fresh(m) then
    return nil -- changed since the build: the source is the truth
  end
  local src = M.root .. "/" .. m[1]
  local f = io.open(M.dir .. "/" .. name .. ".luac", "rb")
  if not f then
    return nil
  end
  local code = f:read("*a")
  f:close()
  -- The bytecode names its source (messages, debug.getinfo: loader.lua
  -- finds the root through it) as the source would.
  local chunk = load(code, "@" .. src)
  if chunk then
    M.loaded[name] = true
  end
  return chunk
end

--- Load the sharedserver modules from bytecode from now on, if build.lua
--- compiled them for this Lua. Idempotent; cheap when there is nothing.
function M.install()
  if installed then
    return
  end
  installed = true
  local m = M.manifest()
  if not m or m.lua ~= M.lua_id() or m.root ~= M.root then
    return
  end
  manifest = m
  table.insert(package.loaders, 2, searcher)
end

return M
