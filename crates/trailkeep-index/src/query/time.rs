//! Time expressions for the separate time range of searches and aggregations (`from`, `to`) and
//! for bucket intervals: `2026-01-31T12:00:00Z`, `2026-01-31`, `now`, `now-24h`, `now-7d`, `15m`.
//!
//! Pure: "now" is an argument.

use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime};

/// A time expression or duration that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct TimeExprError {
    /// The text given.
    pub text: String,
    /// What was expected.
    pub expected: &'static str,
}

const TIME_EXPECTED: &str = "a time: RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31, midnight UTC), `now` or `now-24h`";
const DURATION_EXPECTED: &str = "a duration such as 30s, 15m, 24h, 7d or 2w";

/// Reads a time bound: RFC 3339, a date (midnight UTC), `now`, or `now` ± a duration.
pub fn parse_time_expr(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, TimeExprError> {
    let err = || TimeExprError {
        text: text.to_string(),
        expected: TIME_EXPECTED,
    };
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, d) = match rest.split_at(1) {
            ("-", d) => (-1, d),
            ("+", d) => (1, d),
            _ => return Err(err()),
        };
        let d = parse_duration(d).map_err(|_| err())?;
        return now
            .checked_add(if sign < 0 { -d } else { d })
            .ok_or_else(err);
    }
    if let Ok(t) = OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(t);
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(t, &date_fmt) {
        return Ok(d.midnight().assume_utc());
    }
    Err(err())
}

/// Reads a positive duration: a whole number followed by `s`, `m`, `h`, `d` or `w`.
pub fn parse_duration(text: &str) -> Result<Duration, TimeExprError> {
    let err = || TimeExprError {
        text: text.to_string(),
        expected: DURATION_EXPECTED,
    };
    let t = text.trim();
    let unit_at = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (n, unit) = t.split_at(unit_at);
    let n: i64 = n.parse().map_err(|_| err())?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(err()),
    };
    if n <= 0 {
        return Err(err());
    }
    n.checked_mul(secs_per)
        .map(Duration::seconds)
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn time_expressions() {
        let now = datetime!(2026-03-01 12:00:00 UTC);
        let ok = |s: &str| parse_time_expr(s, now).unwrap();
        assert_eq!(ok("now"), now);
        assert_eq!(ok("now-24h"), datetime!(2026-02-28 12:00:00 UTC));
        assert_eq!(ok("now-7d"), datetime!(2026-02-22 12:00:00 UTC));
        assert_eq!(ok("now+15m"), datetime!(2026-03-01 12:15:00 UTC));
        assert_eq!(ok("2026-01-31"), datetime!(2026-01-31 00:00:00 UTC));
        assert_eq!(
            ok("2026-01-31T10:00:00+02:00"),
            datetime!(2026-01-31 08:00:00 UTC)
        );
        for bad in [
            "",
            "yesterday",
            "now-",
            "now-5",
            "now*2h",
            "now-0h",
            "now-99999999999999999w",
            "2026-13-01",
        ] {
            assert!(parse_time_expr(bad, now).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90s").unwrap(), Duration::seconds(90));
        assert_eq!(parse_duration("2w").unwrap(), Duration::days(14));
        assert!(parse_duration("1.5h").is_err());
    }
}
