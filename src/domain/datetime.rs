//! Datetime input and output encodings (api.md §0.2).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, SubsecRound, TimeZone, Utc};
use serde_json::Value;

/// Reads RFC 3339 (with offset or `Z`), a naive `YYYY-MM-DDTHH:MM:SS[.f]` as UTC, a date-only
/// `YYYY-MM-DD` as 00:00 UTC, or a JSON number of Unix seconds. Sub-microsecond digits are
/// truncated.
pub fn parse_input(value: &Value) -> Option<DateTime<Utc>> {
    let parsed = match value {
        Value::String(s) => parse_str(s.trim())?,
        Value::Number(n) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() {
                return None;
            }
            let whole = secs.floor();
            let micros = ((secs - whole) * 1_000_000.0).round() as u32;
            Utc.timestamp_opt(whole as i64, micros * 1_000).single()?
        }
        _ => return None,
    };
    Some(parsed.trunc_subsecs(6))
}

fn parse_str(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Some(naive.and_utc());
        }
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// ISO-8601 in UTC with `Z`; fractional seconds only when non-zero, then with 6 digits.
pub fn format(dt: &DateTime<Utc>) -> String {
    let dt = dt.trunc_subsecs(6);
    if dt.timestamp_subsec_micros() == 0 {
        dt.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        dt.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// serde helpers for payload fields.
pub mod serde_utc {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(dt: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(dt))
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            dt: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match dt {
                Some(dt) => s.serialize_str(&super::super::format(dt)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_input_form_is_read_as_utc() {
        let expect = Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap();
        for v in [
            json!("2026-09-01T00:00:00Z"),
            json!("2026-09-01T02:00:00+02:00"),
            json!("2026-09-01T00:00:00"),
            json!("2026-09-01"),
            json!(expect.timestamp()),
        ] {
            assert_eq!(parse_input(&v), Some(expect), "{v}");
        }
        assert_eq!(parse_input(&json!("tomorrow")), None);
        assert_eq!(parse_input(&json!(true)), None);
    }

    #[test]
    fn output_has_z_and_micros_only_when_needed() {
        let whole = Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap();
        assert_eq!(format(&whole), "2026-09-01T00:00:00Z");
        let frac = parse_input(&json!("2026-07-06T09:27:13.123456789Z")).unwrap();
        assert_eq!(format(&frac), "2026-07-06T09:27:13.123456Z");
        let milli = parse_input(&json!("2026-07-06T09:27:13.5Z")).unwrap();
        assert_eq!(format(&milli), "2026-07-06T09:27:13.500000Z");
    }
}
