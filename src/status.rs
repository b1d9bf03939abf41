//! The public view of a server, shared by `info --json`, `list --json` and
//! the native module's `status()`. Documented in doc/ARCHITECTURE.md.

use crate::duration;
use crate::record::{rfc3339, ExitKind, LastExit, Record, State, Termination};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub pid: Option<u32>,
    pub refcount: usize,
    pub clients: Vec<ClientStatus>,
    pub command: Vec<String>,
    /// `command` as one line, quoted as a POSIX shell would need it: the
    /// one way every view (CLI, float) shows a command.
    pub command_line: String,
    pub grace_period: Option<String>,
    /// Milliseconds left before a server in grace is stopped.
    pub grace_remaining_ms: Option<u64>,
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub watcher_pid: Option<u32>,
    pub log_file: Option<String>,
    pub cwd: Option<String>,
    pub last_exit: Option<ExitStatus>,
    /// Readiness spec, if the server has one.
    pub ready: Option<String>,
    /// Automatic restarts within the current restart window.
    pub restarts: usize,
    /// How the watcher learns of exits: `pidfd` or `portable`.
    pub backend: Option<crate::process::Backend>,
    /// The TCP port found or checked at start (`port` option).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    pub pid: u32,
    pub attached_at: String,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExitStatus {
    pub pid: u32,
    /// `code` or `signal` (the other is null; both when unknown).
    #[serde(flatten)]
    pub how: Termination,
    /// Why it ended, for decisions (see doc/ARCHITECTURE.md); `reason` is for people.
    pub kind: ExitKind,
    pub reason: String,
    pub at: String,
    /// The log's last lines, kept when the end was a failure.
    pub log_tail: Option<String>,
}

impl From<&LastExit> for ExitStatus {
    fn from(l: &LastExit) -> Self {
        ExitStatus {
            pid: l.pid,
            how: l.how,
            kind: l.kind,
            reason: l.reason.clone(),
            at: rfc3339(l.at_ms),
            log_tail: l.log_tail.clone(),
        }
    }
}

impl Status {
    pub fn stopped(name: &str, last: Option<&LastExit>) -> Status {
        Status {
            name: name.to_string(),
            state: State::Stopped,
            pid: None,
            refcount: 0,
            clients: vec![],
            command: last.map(|l| l.command.clone()).unwrap_or_default(),
            command_line: last.map_or_else(String::new, |l| shell_words(&l.command)),
            grace_period: None,
            grace_remaining_ms: None,
            started_at: None,
            uptime_secs: None,
            watcher_pid: None,
            log_file: last.and_then(|l| l.log_file.clone()),
            cwd: None,
            last_exit: last.map(ExitStatus::from),
            ready: None,
            restarts: 0,
            backend: None,
            port: None,
        }
    }

    /// Status of a settled record (dead clients already pruned).
    pub fn of(rec: &Record, now_ms: u64) -> Status {
        let last = rec.last_exit.as_ref();
        let state = rec.state();
        Status {
            name: rec.name.clone(),
            state,
            pid: Some(rec.server.pid),
            refcount: rec.clients.len(),
            clients: rec
                .clients
                .iter()
                .map(|c| ClientStatus {
                    pid: c.id.pid,
                    attached_at: rfc3339(c.attached_at_ms),
                    metadata: c.metadata.clone(),
                })
                .collect(),
            command: rec.command.clone(),
            command_line: shell_words(&rec.command),
            grace_period: Some(duration::format(Duration::from_millis(rec.grace_period_ms))),
            grace_remaining_ms: (state == State::Grace)
                .then(|| rec.grace_until_ms.map(|u| u.saturating_sub(now_ms)))
                .flatten(),
            started_at: Some(rfc3339(rec.started_at_ms)),
            uptime_secs: Some(now_ms.saturating_sub(rec.started_at_ms) / 1000),
            watcher_pid: rec.watcher.map(|w| w.pid),
            log_file: rec.log_file.clone(),
            cwd: Some(rec.cwd.clone()),
            last_exit: last.map(ExitStatus::from),
            ready: rec.ready.clone(),
            restarts: rec.restarts_ms.len(),
            backend: rec.backend,
            port: rec.port,
        }
    }
}

/// `argv` as one line a POSIX shell reads back as the same words: plain
/// words as they are, anything else (the empty word too) in single quotes.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else if w.chars().any(char::is_control) {
                // $'...' (bash, zsh, ksh): a newline or an escape sequence
                // in an argument must not reach the terminal as itself.
                format!(
                    "$'{}'",
                    printable(&w.replace('\\', r"\\").replace('\'', r"\'"))
                )
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` with its control characters written as escapes (`\n`, `\t`,
/// `\x1b`): free text from a client (metadata) or a command line must not
/// break a table or send escape sequences to the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\r' => out.push_str(r"\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_words_quote_what_a_shell_would_split_or_drop() {
        let argv: Vec<String> = ["sh", "-c", "echo it's", ""].map(String::from).into();
        assert_eq!(super::shell_words(&argv), r"sh -c 'echo it'\''s' ''");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let argv: Vec<String> = ["sleep\n", "it's\x1b[31m\\"].map(String::from).into();
        assert_eq!(super::shell_words(&argv), r"$'sleep\n' $'it\'s\x1b[31m\\'");
        assert_eq!(super::printable("a\nb\tc\u{7f}"), r"a\nb\tc\x7f");
    }
}
