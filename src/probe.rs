//! Readiness: how we tell that a freshly started server answers.
//!
//! A spec is written `tcp://HOST:PORT`, `http://HOST:PORT/PATH`,
//! `unix:///path`, `log:REGEX` or `cmd:SHELL-COMMAND`. The watcher probes
//! with an interval that grows from 5 ms to at most 100 ms.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum ReadySpec {
    Tcp(String),
    Http {
        addr: String,
        host: String,
        path: String,
    },
    Unix(String),
    Log(regex::Regex),
    Cmd(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const FIRST_INTERVAL: Duration = Duration::from_millis(5);
pub const MAX_INTERVAL: Duration = Duration::from_millis(100);

const IPV6_BRACKETS: &str = "write an IPv6 address in brackets, as in [::1]:8080";

enum Port {
    Given,
    Missing,
    /// A bare IPv6 address: its last group cannot be told from a port.
    Ambiguous,
}

/// Whether `host[:port]` (`[v6]:port` for IPv6) names a port.
fn port_of(addr: &str) -> Port {
    let port = if addr.starts_with('[') {
        addr.split_once("]:").map(|(_, p)| p)
    } else {
        match addr.matches(':').count() {
            0 => None,
            1 => addr.split_once(':').map(|(_, p)| p),
            _ => return Port::Ambiguous,
        }
    };
    match port {
        Some(p) if !p.is_empty() => Port::Given,
        _ => Port::Missing,
    }
}

impl ReadySpec {
    pub fn parse(text: &str) -> Result<ReadySpec> {
        let bad = |why: &str| {
            Err(Error::Other(format!(
                "invalid readiness spec {text:?}: {why} (use tcp://HOST:PORT, http://HOST:PORT/PATH, unix:///PATH, log:REGEX or cmd:COMMAND)"
            )))
        };
        if let Some(addr) = text.strip_prefix("tcp://") {
            return match port_of(addr) {
                Port::Given => Ok(ReadySpec::Tcp(addr.to_string())),
                Port::Missing => bad("missing port"),
                Port::Ambiguous => bad(IPV6_BRACKETS),
            };
        }
        if let Some(rest) = text.strip_prefix("http://") {
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if host.is_empty() {
                return bad("missing host");
            }
            let addr = match port_of(host) {
                Port::Given => host.to_string(),
                Port::Missing => format!("{host}:80"),
                Port::Ambiguous => return bad(IPV6_BRACKETS),
            };
            return Ok(ReadySpec::Http {
                addr,
                host: host.to_string(),
                path: path.to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return bad("the socket path must be absolute (unix:///run/x.sock)");
            }
            return Ok(ReadySpec::Unix(path.to_string()));
        }
        if let Some(re) = text.strip_prefix("log:") {
            return match regex::Regex::new(re) {
                Ok(re) => Ok(ReadySpec::Log(re)),
                // The regex crate draws a caret under the fault over three
                // lines; the last one says what is wrong, which is enough.
                Err(e) => {
                    let text = e.to_string();
                    let why = text
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    bad(&format!(
                        "bad regular expression: {}",
                        why.trim().trim_start_matches("error: ")
                    ))
                }
            };
        }
        if let Some(cmd) = text.strip_prefix("cmd:") {
            if cmd.trim().is_empty() {
                return bad("empty command");
            }
            return Ok(ReadySpec::Cmd(cmd.to_string()));
        }
        bad("unknown kind")
    }

    /// One probe, taking at most about `limit` (a `cmd:` probe is killed
    /// when it runs out). `log:` specs are answered by the log pump, not here;
    /// the watcher runs `cmd:` probes itself, without waiting (see
    /// [`spawn_cmd`]).
    pub fn check(&self, limit: Duration) -> bool {
        match self {
            ReadySpec::Tcp(addr) => connect_tcp(addr).is_some(),
            ReadySpec::Http { addr, host, path } => http_ok(addr, host, path),
            ReadySpec::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            ReadySpec::Log(_) => false,
            ReadySpec::Cmd(cmd) => run_bounded(cmd, limit),
        }
    }

    /// The shell command of a `cmd:` spec.
    pub fn cmd(&self) -> Option<&str> {
        match self {
            ReadySpec::Cmd(cmd) => Some(cmd),
            _ => None,
        }
    }

    pub fn log_regex(&self) -> Option<&regex::Regex> {
        match self {
            ReadySpec::Log(re) => Some(re),
            _ => None,
        }
    }
}

/// Start `sh -c cmd` as the server runs: in its working directory, with its
/// environment added, in a process group of its own (so it can be killed
/// with everything it started). The caller waits for it and reaps it.
pub fn spawn_cmd(
    cmd: &str,
    cwd: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .current_dir(cwd)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
}

/// Run `sh -c cmd` in its own process group; success if it exits 0 within
/// `limit`, otherwise the whole group is killed.
fn run_bounded(cmd: &str, limit: Duration) -> bool {
    use std::os::unix::process::CommandExt;
    let Ok(mut child) = std::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
    else {
        return false;
    };
    let finished = match crate::process::Handle::child(&child) {
        // Our unreaped child: the pid cannot be reused under us.
        Ok(handle) => handle.wait_exit(limit),
        Err(_) => true, // cannot watch it: wait without a bound
    };
    if !finished {
        // SAFETY: the group leader is our unreaped child.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    }
    child.wait().is_ok_and(|s| s.success()) && finished
}

fn connect_tcp(addr: &str) -> Option<TcpStream> {
    resolve(addr)?
        .into_iter()
        .find_map(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).ok())
}

/// `localhost` is the loopback address by definition (RFC 6761), so it is
/// answered here: the usual probe never waits on a resolver, and never
/// depends on NSS modules (which a statically linked binary cannot load).
/// Other names go through the system resolver.
fn resolve(addr: &str) -> Option<Vec<std::net::SocketAddr>> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    if let Some((host, port)) = addr.rsplit_once(':') {
        if host.eq_ignore_ascii_case("localhost") {
            let port = port.parse().ok()?;
            return Some(vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ]);
        }
    }
    Some(addr.to_socket_addrs().ok()?.collect())
}

fn http_ok(addr: &str, host: &str, path: &str) -> bool {
    let Some(mut stream) = connect_tcp(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    // "HTTP/1.x 2xx"
    let line = String::from_utf8_lossy(&head[..len]);
    line.starts_with("HTTP/")
        && line
            .split_whitespace()
            .nth(1)
            .is_some_and(|c| c.starts_with('2'))
}

/// The probe schedule: 5 ms, then growing by half, capped at 100 ms.
pub fn next_interval(prev: Option<Duration>) -> Duration {
    match prev {
        None => FIRST_INTERVAL,
        Some(d) => (d + d / 2).min(MAX_INTERVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_take_brackets() {
        assert!(matches!(
            ReadySpec::parse("tcp://[::1]:8080"),
            Ok(ReadySpec::Tcp(_))
        ));
        match ReadySpec::parse("http://[::1]/health").unwrap() {
            ReadySpec::Http { addr, host, .. } => {
                assert_eq!((addr.as_str(), host.as_str()), ("[::1]:80", "[::1]"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(resolve("[::1]:8080").unwrap().len(), 1);
        for bad in [
            "tcp://::1:8080",
            "http://::1/x",
            "tcp://[::1]",
            "tcp://[::1]:",
        ] {
            assert!(ReadySpec::parse(bad).is_err(), "{bad}");
        }
        let e = ReadySpec::parse("tcp://::1:8080").unwrap_err().to_string();
        assert!(e.contains("[::1]:8080"), "{e}");
    }

    #[test]
    fn localhost_is_loopback_without_a_resolver() {
        let addrs = resolve("LocalHost:8080").unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        assert!(resolve("localhost:notaport").is_none());
        assert_eq!(resolve("127.0.0.1:1").unwrap().len(), 1);
    }

    #[test]
    fn parses_every_kind_and_refuses_the_rest() {
        assert!(matches!(
            ReadySpec::parse("tcp://127.0.0.1:8000"),
            Ok(ReadySpec::Tcp(_))
        ));
        match ReadySpec::parse("http://localhost:8000/health").unwrap() {
            ReadySpec::Http { addr, path, .. } => assert_eq!(
                (addr.as_str(), path.as_str()),
                ("localhost:8000", "/health")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ReadySpec::parse("unix:///tmp/x.sock"),
            Ok(ReadySpec::Unix(_))
        ));
        assert!(matches!(
            ReadySpec::parse("log:listening on \\d+"),
            Ok(ReadySpec::Log(_))
        ));
        assert!(matches!(
            ReadySpec::parse("cmd:true"),
            Ok(ReadySpec::Cmd(_))
        ));
        for bad in ["tcp://host", "ftp://x", "log:(", "unix://rel", "cmd: ", ""] {
            let err = ReadySpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains("tcp://HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn interval_grows_to_the_cap() {
        let mut d = None;
        for _ in 0..20 {
            d = Some(next_interval(d));
        }
        assert_eq!(d, Some(MAX_INTERVAL));
    }
}
