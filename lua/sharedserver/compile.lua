---@mod sharedserver.compile Compiling the plugin's modules into bytecode
---
--- build.lua calls compile(); :checkhealth calls report(). Loading is
--- compiled.lua's (kept small: it is parsed at every start-up).

local c = require("sharedserver.compiled")

local M = {}

--- For :checkhealth: how many modules the manifest has, how many of them
--- are stale, and why none are used when that is so.
---@return { modules: integer, stale: integer, loaded: integer, problem: string|nil }
function M.report()
  local out = { modules = 0, stale = 0, loaded = vim.tbl_count(c.loaded) }
  local m = c.manifest()
  if not m then
    out.problem = "not compiled (build.lua compiles the modules)"
    return out
  end
  if m.lua ~= c.lua_id() then
    out.problem = string.format("compiled by %s, but this is %s", tostring(m.lua), c.lua_id())
  elseif m.root ~= c.root then
    out.problem =
      string.format("compiled in %s, but the plugin is now in %s", tostring(m.root), c.root)
  end
  for _, mod in pairs(m.modules) do
    out.modules = out.modules + 1
    if not c.fresh(mod) then
      out.stale = out.stale + 1
    end
  end
  return out
end

--- Write `data` to `path` by a rename, so a reader sees all or nothing.
---@param path string
---@param data string
---@return boolean|nil ok, string|nil err
local function write_atomic(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then
    return nil, err
  end
  f:write(data)
  f:close()
  return os.rename(tmp, path)
end

--- Compile every module under lua/sharedserver into bytecode/ (build.lua).
--- The old manifest goes first and the new one is written last; every file
--- is written by rename, so a Neovim starting meanwhile sees either no
--- manifest or a complete one, and whole files.
---@return integer count, string|nil err
function M.compile()
  local lua_dir = c.root .. "/lua/"
  vim.fn.mkdir(c.dir, "p")
  os.remove(c.dir .. "/manifest.lua")
  local modules = {} ---@type table<string, sharedserver.CompiledModule>
  -- The entry point and the searcher it installs always load from source;
  -- _meta is types only.
  local skip =
    { sharedserver = true, ["sharedserver.compiled"] = true, ["sharedserver._meta"] = true }
  for _, path in ipairs(vim.fn.globpath(lua_dir, "sharedserver/**/*.lua", false, true)) do
    local rel = path:sub(#lua_dir + 1)
    local name = rel:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    if not skip[name] then
      -- Stamped before it is read: a source edited meanwhile no longer
      -- matches its stamp, so it loads from source.
      local size, sec, nsec = c.stamp(path)
      local chunk, err = loadfile(path)
      if not chunk then
        return 0, err
      end
      -- With its debug information: errors keep their lines, at no cost
      -- in load time. It names the source by its path at compile time, so
      -- the manifest names the root too (compiled.lua checks it).
      local ok, write_err = write_atomic(c.dir .. "/" .. name .. ".luac", string.dump(chunk))
      if not ok then
        return 0, write_err
      end
      modules[name] = { "lua/" .. rel, size, sec, nsec }
    end
  end
  local manifest = { lua = c.lua_id(), root = c.root, modules = modules }
  local ok, err = write_atomic(c.dir .. "/manifest.lua", "return " .. vim.inspect(manifest) .. "\n")
  if not ok then
    return 0, err
  end
  return vim.tbl_count(modules), nil
end

return M
