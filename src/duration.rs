//! Durations as users type them (`500ms`, `30s`, `2h30m`), via humantime.

use crate::error::{Error, Result};
use std::time::Duration;

/// Longer than any sensible grace period or timeout, and small enough that
/// milliseconds since the epoch plus it never overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub fn parse(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(trimmed)
        .map_err(|e| Error::BadDuration(text.to_string(), e.to_string()))?;
    if d > MAX {
        return Err(Error::BadDuration(
            text.to_string(),
            "longer than 100 years".into(),
        ));
    }
    Ok(d)
}

pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_garbage_with_an_example() {
        let err = parse("5 parsecs").unwrap_err().to_string();
        assert!(err.contains("5 parsecs") && err.contains("30s"), "{err}");
        assert!(parse("").is_err());
        assert!(parse("-5s").is_err());
        assert!(
            parse("18446744073709551s").is_err(),
            "absurd lengths are refused"
        );
    }

    #[test]
    fn round_trips() {
        assert_eq!(format(Duration::from_secs(9000)), "2h30m");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
