---@mod sharedserver.status.model The state :ServerStatus shows
---
--- Every configured server plus every server found in the lock dir, each as
--- a status table (see sharedserver.status()). No drawing here.

local M = {}

---@class sharedserver.ModelEntry: sharedserver.ServerStatus

--- Statuses of all servers, configured here or found in the lock dir,
--- sorted by name.
---@return sharedserver.ModelEntry[]
function M.collect()
  local ss = require("sharedserver")
  local by_name = {}
  for _, name in ipairs(ss.list()) do
    by_name[name] = ss.status(name)
  end
  local n = require("sharedserver.loader").try_load()
  if n then
    local ok, all = pcall(n.list)
    for _, st in ipairs(ok and all or {}) do
      if st.name and not by_name[st.name] then
        st.running = st.state == "active" or st.state == "grace" or st.state == "starting"
        st.attached, st.lazy, st.registered = false, false, false
        by_name[st.name] = st
      end
    end
  end
  local names = vim.tbl_keys(by_name)
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    out[#out + 1] = by_name[name]
  end
  return out
end

--- One server's status, configured or not.
---@param name string
---@return sharedserver.ModelEntry
function M.get(name)
  return require("sharedserver").status(name)
end

return M
