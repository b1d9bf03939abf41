---@mod sharedserver.status.view Turns statuses into lines
---
--- Pure functions of the model: no Neovim state is read or changed here.

local M = {}

--- One mark per state (doc/sharedserver.txt lists them).
M.markers = {
  starting = "◌",
  active = "●",
  grace = "⏳",
  stopping = "◍",
  stopped = "○",
  error = "✗",
}
-- A state is shown by its own word: the CLI's and the JSON's, unchanged.
M.columns = { "NAME", "STATUS", "PID", "REFS", "UPTIME" }
M.footer = "q/<Esc> close"

---@param s string
---@return integer
local function width(s)
  return vim.fn.strdisplaywidth(s)
end

---@param s string
---@param w integer
---@return string
local function pad(s, w)
  return s .. string.rep(" ", math.max(0, w - width(s)))
end

--- "12s", "45m07s", "2h05m", "3d04h" (the CLI's `info` format), or "-".
---@param secs integer|nil
---@return string
function M.duration(secs)
  if not secs then
    return "-"
  end
  local d, h, m, s =
    math.floor(secs / 86400), math.floor(secs / 3600) % 24, math.floor(secs / 60) % 60, secs % 60
  if d > 0 then
    return string.format("%dd%02dh", d, h)
  elseif h > 0 then
    return string.format("%dh%02dm", h, m)
  elseif m > 0 then
    return string.format("%dm%02ds", m, s)
  end
  return string.format("%ds", s)
end

---@param st sharedserver.ModelEntry
---@return string
local function marker(st)
  return pad(M.markers[st.state] or "?", 2) .. " "
end

---@param st sharedserver.ModelEntry
---@return string[]
local function tags(st)
  local t = {}
  if st.lazy then
    t[#t + 1] = "[lazy]"
  end
  if st.attached then
    t[#t + 1] = "[attached]"
  end
  if st.registered == false then
    t[#t + 1] = "[external]"
  end
  if st.port and st.running then
    t[#t + 1] = "port " .. st.port
  end
  return t
end

--- The table of every server: a header, a rule, one row per server, and
--- (unless `footer` is false) the window's key help.
---@param entries sharedserver.ModelEntry[]
---@param footer boolean|nil
---@return string[]
function M.table(entries, footer)
  local rows = {}
  for _, st in ipairs(entries) do
    local up = st.running and M.duration(st.uptime_secs) or "-"
    rows[#rows + 1] = {
      marker(st) .. st.name,
      st.state,
      st.pid and tostring(st.pid) or "-",
      st.pid and tostring(st.refcount or 0) or "-",
      up,
      table.concat(tags(st), " "),
    }
  end
  local header =
    { "   " .. M.columns[1], M.columns[2], M.columns[3], M.columns[4], M.columns[5], "" }
  local widths = {}
  for i = 1, 5 do
    widths[i] = width(header[i])
    for _, r in ipairs(rows) do
      widths[i] = math.max(widths[i], width(r[i]))
    end
  end
  local function line(r)
    local parts = {}
    for i = 1, 5 do
      parts[i] = pad(r[i], widths[i])
    end
    local s = table.concat(parts, "  ")
    if r[6] ~= "" then
      s = s .. "  " .. r[6]
    end
    return (s:gsub("%s+$", ""))
  end
  local lines = { line(header) }
  local total = widths[1] + widths[2] + widths[3] + widths[4] + widths[5] + 8
  lines[2] = string.rep("─", total)
  if #rows == 0 then
    lines[#lines + 1] = "  (no servers configured or running)"
  end
  for _, r in ipairs(rows) do
    lines[#lines + 1] = line(r)
  end
  if footer ~= false then
    lines[#lines + 1] = ""
    lines[#lines + 1] = M.footer
  end
  return lines
end

--- Highlight group of each state's marker (groups that exist since 0.7).
M.marker_groups = {
  starting = "DiagnosticInfo",
  active = "DiagnosticInfo",
  grace = "DiagnosticWarn",
  stopping = "DiagnosticWarn",
  stopped = "Comment",
  error = "DiagnosticError",
}

---@class sharedserver.Highlight
---@field group string
---@field line integer 0-based
---@field col_start integer byte offset, 0-based
---@field col_end integer byte offset, exclusive (-1: to the end)

--- Highlights for lines made by `table` or `detail`: the header, the
--- markers, and the key hint.
---@param lines string[]
---@return sharedserver.Highlight[]
function M.highlights(lines)
  local out = {}
  for i, l in ipairs(lines) do
    if i == 1 and l:find("NAME", 1, true) then
      out[#out + 1] = { group = "Title", line = i - 1, col_start = 0, col_end = -1 }
    elseif l == M.footer then
      out[#out + 1] = { group = "Comment", line = i - 1, col_start = 0, col_end = -1 }
    else
      for state, mark in pairs(M.markers) do
        if l:sub(1, #mark) == mark then
          local group = M.marker_groups[state]
          out[#out + 1] = { group = group, line = i - 1, col_start = 0, col_end = #mark }
          break
        end
      end
    end
  end
  return out
end

---@param st sharedserver.ModelEntry
---@param footer boolean|nil false: without the window's key help
---@return string[]
function M.detail(st, footer)
  local lines = {
    marker(st) .. st.name .. "  " .. st.state .. "  " .. table.concat(tags(st), " "),
  }
  lines[1] = lines[1]:gsub("%s+$", "")
  local function row(key, value)
    if value ~= nil and value ~= "" then
      lines[#lines + 1] = "  " .. pad(key, 13) .. tostring(value)
    end
  end
  if st.error then
    row("error", st.error)
  end
  if st.pid then
    row("pid", st.pid .. (st.watcher_pid and string.format(" (watcher %d)", st.watcher_pid) or ""))
    row("refcount", st.refcount)
    row("port", st.port)
    row(
      "uptime",
      M.duration(st.uptime_secs) .. (st.started_at and (" (since " .. st.started_at .. ")") or "")
    )
    local grace = st.grace_period
    if grace and st.grace_remaining_ms then
      grace = grace
        .. string.format(" (%s left)", M.duration(math.floor(st.grace_remaining_ms / 1000)))
    end
    row("grace period", grace)
  end
  if st.command and #st.command > 0 then
    row("command", st.command_line or table.concat(st.command, " "))
  end
  row("cwd", st.cwd)
  row("log", st.log_file)
  row("ready when", st.ready)
  if st.restarts and st.restarts > 0 then
    row("restarts", st.restarts)
  end
  if st.registered ~= nil then
    row(
      "this nvim",
      st.registered and (st.attached and "attached" or "not attached") or "not configured here"
    )
  end
  if st.clients and #st.clients > 0 then
    lines[#lines + 1] = "  clients"
    for _, c in ipairs(st.clients) do
      lines[#lines + 1] = string.format(
        "    %-8d since %s%s",
        c.pid,
        c.attached_at,
        c.metadata and ("  " .. c.metadata) or ""
      )
    end
  end
  local e = st.last_exit
  if e then
    local how = require("sharedserver.exits").words(e) or "unknown status"
    row("last exit", string.format("pid %d, %s, %s (%s)", e.pid, how, e.reason, e.at))
    if e.log_tail then
      lines[#lines + 1] = "  last output"
      for line in vim.gsplit(e.log_tail, "\n", true) do
        lines[#lines + 1] = "    " .. line
      end
    end
  end
  if footer ~= false then
    lines[#lines + 1] = ""
    lines[#lines + 1] = M.footer
  end
  return lines
end

return M
