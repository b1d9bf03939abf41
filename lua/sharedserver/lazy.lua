-- A stand-in for a module that loads it on first use.
--
-- setup() runs at Neovim startup, where every millisecond shows, but it
-- needs only the registry, the options and the autocmds. The modules that
-- start, stop, wait for and report on servers load when first used.

---@param name string module name, as for `require`
---@return table proxy that forwards every field access to the module
return function(name)
  return setmetatable({}, {
    __index = function(_, key)
      return require(name)[key]
    end,
  })
end
