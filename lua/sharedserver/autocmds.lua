---@mod sharedserver.autocmds What happens as Neovim starts and exits
---
--- setup() starts nothing, so servers are started (or, if lazy, attached to
--- when already running) on VimEnter, after the project servers are added;
--- one registered later is entered at once. (The joins of running servers
--- begin earlier, on a native thread: start.prepare.) On VimLeave, Neovim
--- can no longer wait for a child process, so every reference is dropped
--- in-process.

local lazy = require("sharedserver.lazy")
local project = lazy("sharedserver.project")
local start = lazy("sharedserver.start")
local state = require("sharedserver.state")

local M = {}

--- The augroup and its autocommands exist.
local installed = false

--- The VimEnter action for one server (once): start it, or attach if it is
--- lazy and running.
---@param name string
function M.enter(name)
  start.enter({ name })
end

local function on_vim_enter()
  -- What this says shows once Neovim has started (notify.later).
  require("sharedserver.notify").later(function()
    if state.opts.project then
      project.load()
    end
    state.entered = true
    start.enter(state.list())
  end)
end

--- Detach every server this instance is attached to, in-process, and stop
--- watching. Runs on VimLeave.
function M.detach_all()
  -- Only what was started needs stopping: loading a module here just to
  -- find it idle would cost the exit time.
  for _, mod in ipairs({ "sharedserver.monitor", "sharedserver.ready" }) do
    if package.loaded[mod] then
      package.loaded[mod].stop()
    end
  end
  if not require("sharedserver.loader").loaded_path then
    return -- never opened: this instance attached to nothing
  end
  local names = {}
  for name, e in pairs(state.servers) do
    if e.attached then
      e.attached, e.waiting = false, false
      names[#names + 1] = name
    end
  end
  -- One call, which never waits: if a lock is busy, that reference stays
  -- in the record, and the watcher drops it when it sees this process gone
  -- (dead-client detection). Made with no names too: what setup() joined
  -- ahead for a VimEnter that never came (`nvim +qa`) is detached there.
  pcall(require("sharedserver.native").leave, names)
end

--- Create the VimLeave autocommand, and the VimEnter one unless Neovim has
--- already entered (then mark it entered). Idempotent.
function M.install()
  if installed then
    return
  end
  installed = true
  local group = vim.api.nvim_create_augroup("sharedserver", { clear = true })
  vim.api.nvim_create_autocmd("VimLeave", {
    group = group,
    callback = function()
      M.detach_all()
    end,
    desc = "sharedserver: detach from every attached server",
  })
  if vim.v.vim_did_enter == 1 then
    state.entered = true
  else
    vim.api.nvim_create_autocmd("VimEnter", {
      group = group,
      once = true,
      callback = on_vim_enter,
      desc = "sharedserver: start or attach configured servers",
    })
  end
end

return M
