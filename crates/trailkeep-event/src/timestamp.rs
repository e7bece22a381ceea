//! Lenient `eventTime` parsing and the one stored form of DESIGN §2.
//!
//! Accepts `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` followed by `Z`, `±HH:MM`, `±HHMM` or `±HH`
//! (`T` may also be `t` or a space, `Z` may be `z`). Stores RFC 3339 in UTC with a
//! `+00:00` offset (CADF forbids `Z`), keeping exactly the fraction digits sent.
//! Non-UTC offsets are converted to UTC.

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// Parse `text` and return the stored form, e.g. `2020-03-11T09:28:35.15+00:00`.
pub fn normalize_event_time(text: &str) -> Result<String, &'static str> {
    const RULE: &str = "must be a timestamp like 2024-05-01T12:30:00.25+00:00 (offset Z, +hh:mm or +hhmm; 0-9 fraction digits)";
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(RULE);
    }
    let num = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let sep_ok = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !sep_ok {
        return Err(RULE);
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(&b[0..4]),
        num(&b[5..7]),
        num(&b[8..10]),
        num(&b[11..13]),
        num(&b[14..16]),
        num(&b[17..19]),
    ) else {
        return Err(RULE);
    };
    let mut i = 19;
    let mut fraction = "";
    if b[i] == b'.' || b[i] == b',' {
        let start = i + 1;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if end == start || end - start > 9 {
            return Err(RULE);
        }
        fraction = &text[start..end];
        i = end;
    }
    let offset_secs: i32 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2] => (num(&[*h1, *h2]), Some(0)),
                [h1, h2, m1, m2] => (num(&[*h1, *h2]), num(&[*m1, *m2])),
                [h1, h2, b':', m1, m2] => (num(&[*h1, *h2]), num(&[*m1, *m2])),
                _ => (None, None),
            };
            let (Some(h), Some(m)) = (h, m) else {
                return Err(RULE);
            };
            if h > 23 || m > 59 {
                return Err(RULE);
            }
            let secs = (h * 3600 + m * 60) as i32;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err(RULE),
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or("has a month outside 01-12")?;
    let date = Date::from_calendar_date(year as i32, month, day as u8)
        .map_err(|_| "is not a valid calendar date")?;
    let tod = Time::from_hms(hour as u8, minute as u8, second as u8)
        .map_err(|_| "has a time of day outside 00:00:00-23:59:59")?;
    let offset = UtcOffset::from_whole_seconds(offset_secs).map_err(|_| RULE)?;
    let utc = PrimitiveDateTime::new(date, tod)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or("is outside the years 0000-9999 once converted to UTC")?;
    let y = utc.year();
    let mut out = String::with_capacity(32);
    use std::fmt::Write;
    let _ = write!(
        out,
        "{y:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    );
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out.push_str("+00:00");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::normalize_event_time as n;

    #[test]
    fn forms() {
        assert_eq!(
            n("2020-03-11T09:28:35.15+0000").unwrap(),
            "2020-03-11T09:28:35.15+00:00"
        );
        assert_eq!(
            n("2020-03-08T12:22:01+00:00").unwrap(),
            "2020-03-08T12:22:01+00:00"
        );
        assert_eq!(
            n("2023-04-09T19:58:17.603586Z").unwrap(),
            "2023-04-09T19:58:17.603586+00:00"
        );
        assert_eq!(
            n("2023-04-09T01:00:00.123456789+02:00").unwrap(),
            "2023-04-08T23:00:00.123456789+00:00"
        );
        assert_eq!(
            n("2023-04-09T23:30:00-0130").unwrap(),
            "2023-04-10T01:00:00+00:00"
        );
        assert!(n("2023-02-30T00:00:00Z").is_err());
        assert!(n("2023-04-09T19:58:17.1234567890Z").is_err());
        assert!(n("2023-04-09T19:58:17").is_err());
        assert!(n("yesterday").is_err());
        assert!(n("9999-12-31T23:00:00-05:00").is_err());
        assert!(n("0000-01-01T01:00:00+02:00").is_err());
        assert_eq!(
            n("0000-01-01T01:00:00+01:00").unwrap(),
            "0000-01-01T00:00:00+00:00"
        );
        assert!(n("2024-05-14T10:00:00+24:00").is_err());
        assert!(n("2024-05-14T10:00:00.").is_err());
        assert!(n("2024-05-14T10:00:00+05:3").is_err());
        assert!(n("2024-05-14T10:00:00Zjunk").is_err());
        assert!(n("２０２４-05-14T10:00:00Z").is_err());
    }
}
