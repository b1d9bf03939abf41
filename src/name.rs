//! Server names become file names inside the lock directory, so they are
//! validated once, here, and carried around as a type that cannot be wrong.

use crate::error::{Error, Result};
use std::fmt;

pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |why| Err(Error::BadName(raw.to_string(), why));
        let Some(first) = raw.chars().next() else {
            return bad("it is empty");
        };
        if raw.len() > MAX_LEN {
            return bad("it is longer than 64 characters");
        }
        if !first.is_ascii_alphanumeric() {
            return bad("it must start with a letter or digit");
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("it contains a character other than letters, digits, '.', '_' and '-'");
        }
        Ok(ServerName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ServerName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ServerName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "chroma",
            "redis-6379",
            "a",
            "x.y_z",
            "9lives",
            &"a".repeat(64),
        ] {
            assert!(ServerName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_could_escape() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "a b",
            "é",
            "a\0b",
            &"a".repeat(65),
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
