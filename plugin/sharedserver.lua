-- sharedserver: defines the :Server* commands and nothing else. Modules load
-- on first use; servers are configured with require("sharedserver").setup().
if vim.g.loaded_sharedserver or vim.fn.has("nvim-0.7") ~= 1 then
  return
end
vim.g.loaded_sharedserver = true

-- name, nargs, bang (see lua/sharedserver/commands.lua for descriptions)
for _, c in ipairs({
  { "ServerStart", 1, false },
  { "ServerStop", 1, true },
  { "ServerRestart", 1, false },
  { "ServerStatus", "?", false },
  { "ServerList", 0, false },
  { "ServerLog", 1, false },
  { "ServerStopAll", 0, true },
}) do
  local cmd = c[1]
  vim.api.nvim_create_user_command(cmd, function(o)
    require("sharedserver.commands").run(cmd, o)
  end, {
    nargs = c[2],
    bang = c[3],
    complete = c[2] ~= 0 and function(lead, line)
      return require("sharedserver.commands").complete(cmd, lead, line)
    end or nil,
    desc = "sharedserver",
  })
end
