//! A server's TCP port, found or checked at start.
//!
//! `"port": "auto"` (or `--port auto`) picks a free loopback port when the
//! server starts; a number is checked to be free first, so a clash fails the
//! start with a clear error instead of a server that dies on `bind`. Either
//! way the server gets it as `$PORT`, `${PORT}` is replaced in its argv, env
//! and ready check, and the record keeps it for `info`, `port NAME` and the
//! Lua status. Clients that attach later read it there.

use std::net::{Ipv4Addr, TcpListener};

/// The variable the server gets, and the placeholder replaced in its options.
pub const VAR: &str = "PORT";
const PLACEHOLDER: &str = "${PORT}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    /// A free loopback port, chosen at start.
    Auto,
    /// This port; the start fails if something listens on it.
    Fixed(u16),
}

impl PortSpec {
    /// `auto` or a port number (1-65535).
    pub fn parse(text: &str) -> Result<PortSpec, String> {
        let text = text.trim();
        if text == "auto" {
            return Ok(PortSpec::Auto);
        }
        match text.parse::<u16>() {
            Ok(n) if n > 0 => Ok(PortSpec::Fixed(n)),
            _ => Err(format!(
                "invalid port {text:?} (use \"auto\" for a free one, or a number from 1 to 65535)"
            )),
        }
    }

    /// The port to start the server on: a free one for `Auto`, or the fixed
    /// one once it is known to be free. The error says why, for the user.
    pub fn claim(self) -> Result<u16, String> {
        match self {
            // A port free on 127.0.0.1 may still be held on ::1 (the two
            // loopbacks are separate): try a few.
            PortSpec::Auto => (0..AUTO_TRIES)
                .find_map(|_| {
                    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port());
                    match port {
                        Ok(p) if held_on_v6(p).is_some() => None,
                        other => Some(other),
                    }
                })
                .unwrap_or_else(|| Err(std::io::ErrorKind::AddrInUse.into()))
                .map_err(|e| format!("no free loopback port could be found: {e}")),
            // Binding is the only reliable test: a listener on 0.0.0.0 or
            // [::] holds the port for 127.0.0.1 too. The probe sockets are
            // closed at once, before the server starts.
            PortSpec::Fixed(n) => match TcpListener::bind((Ipv4Addr::LOCALHOST, n)) {
                Ok(_) => match held_on_v6(n) {
                    None => Ok(n),
                    Some(e) => Err(busy(n, "[::1]", &e)),
                },
                Err(e) => Err(busy(n, "127.0.0.1", &e)),
            },
        }
    }
}

/// How many free IPv4 ports `auto` tries before giving up on one that is
/// free on ::1 too.
const AUTO_TRIES: usize = 8;

/// The error of binding `port` on ::1, if something holds it there. (No
/// IPv6 on this host: nothing can hold it.)
fn held_on_v6(port: u16) -> Option<std::io::Error> {
    match TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(e),
        _ => None,
    }
}

fn busy(port: u16, on: &str, e: &std::io::Error) -> String {
    format!(
        "port {port} is not free on {on} ({e}); stop what uses it, choose another port, or use \"port\": \"auto\""
    )
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortSpec::Auto => f.write_str("auto"),
            PortSpec::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// Whether `text` holds `${PORT}`, to be replaced by the port found at start.
pub fn has_placeholder(text: &str) -> bool {
    text.contains(PLACEHOLDER)
}

/// `text` with every `${PORT}` replaced by `port`.
pub fn substitute(text: &str, port: u16) -> String {
    text.replace(PLACEHOLDER, &port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_and_numbers_and_explains_the_rest() {
        assert_eq!(PortSpec::parse("auto"), Ok(PortSpec::Auto));
        assert_eq!(PortSpec::parse("8000"), Ok(PortSpec::Fixed(8000)));
        for bad in ["0", "65536", "-1", "eighty", ""] {
            let e = PortSpec::parse(bad).unwrap_err();
            assert!(e.contains("auto") && e.contains("65535"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_fixed_port_in_use_is_refused_and_auto_finds_a_free_one() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy = held.local_addr().unwrap().port();
        let e = PortSpec::Fixed(busy).claim().unwrap_err();
        assert!(e.contains(&format!("port {busy} is not free")), "{e}");
        let free = PortSpec::Auto.claim().unwrap();
        assert_ne!(free, busy);
        assert_eq!(PortSpec::Fixed(free).claim(), Ok(free));
    }

    #[test]
    fn a_port_held_only_on_the_ipv6_loopback_is_not_free() {
        let Ok(held) = TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)) else {
            return; // no IPv6 here: nothing to hold a port on
        };
        let busy = held.local_addr().unwrap().port();
        let e = PortSpec::Fixed(busy).claim().unwrap_err();
        assert!(
            e.contains(&format!("port {busy} is not free on [::1]")),
            "{e}"
        );
    }

    #[test]
    fn substitutes_every_placeholder_and_nothing_else() {
        assert_eq!(
            substitute("--port=${PORT} ${PORT} $PORT ${PORTS}", 81),
            "--port=81 81 $PORT ${PORTS}"
        );
    }
}
