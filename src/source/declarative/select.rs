//! Selectors: where a value sits in an answer (a [`Path`]), what counts as
//! an id, and how a time is written ([`TimeFormat`]).

use std::fmt;
use std::str::FromStr;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;

/// A path into JSON: field names joined by dots (`data.items`,
/// `start.dateTime`), a number indexing an array (`items.0.id`), or `$` for
/// the answer itself (a root array). Written as a string in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<String>,
}

impl FromStr for Path {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let rest = match text {
            "$" => return Ok(Path { text: text.into(), segments: vec![] }),
            _ => text.strip_prefix("$.").unwrap_or(text),
        };
        let good = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !rest.split('.').all(good) {
            return Err(format!(
                "'{text}' is not a path (field names of letters, digits, '_' or '-' joined by '.', e.g. data.items; '$' for the answer itself)"
            ));
        }
        Ok(Path { text: text.into(), segments: rest.split('.').map(String::from).collect() })
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Path {
    /// The path of one field (`id`).
    pub fn field(name: &str) -> Path {
        name.parse().unwrap_or_else(|_| Path { text: name.into(), segments: vec![name.into()] })
    }

    /// The value at this path, if there is one (a JSON `null` counts as none).
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        let mut at = value;
        for segment in &self.segments {
            at = match at {
                Value::Object(fields) => fields.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        (!at.is_null()).then_some(at)
    }

    /// Take the value at this path out of `value`.
    pub fn take(&self, value: &mut Value) -> Option<Value> {
        let Some((last, parents)) = self.segments.split_last() else {
            return Some(value.take()).filter(|v| !v.is_null());
        };
        let mut at = value;
        for segment in parents {
            at = match at {
                Value::Object(fields) => fields.get_mut(segment)?,
                Value::Array(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        let taken = match at {
            Value::Object(fields) => fields.remove(last)?,
            Value::Array(items) => items.get_mut(last.parse::<usize>().ok()?)?.take(),
            _ => return None,
        };
        Some(taken).filter(|v| !v.is_null())
    }

    /// The text at this path (a string, or a number written out): ids,
    /// cursors, tokens.
    pub fn text(&self, value: &Value) -> Option<String> {
        id_text(self.get(value)?)
    }
}

/// An id as text: a non-empty string, or an integer (WhenIWork's ids are
/// numbers, Stripe's strings).
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// How an API writes a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2026-11-22T09:00:00Z`, `2026-11-22T10:00:00+01:00`.
    Rfc3339,
    /// `Sun, 07 Oct 2018 21:00:00 +0100` (WhenIWork).
    Rfc2822,
    /// Seconds since the epoch, a number or a string of digits.
    UnixS,
    /// Milliseconds since the epoch (Tiki's `created_at`).
    UnixMs,
    /// `2026-11-22`: the start of that day.
    Date,
    /// A strftime pattern (`%d/%m/%Y %H:%M`); without an offset in it, the
    /// time is read in the source's time zone.
    Pattern(String),
}

impl FromStr for TimeFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "rfc3339" => TimeFormat::Rfc3339,
            "rfc2822" => TimeFormat::Rfc2822,
            "unix_s" => TimeFormat::UnixS,
            "unix_ms" => TimeFormat::UnixMs,
            "date" => TimeFormat::Date,
            pattern if pattern.contains('%') => {
                if StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error)) {
                    return Err(format!("'{pattern}' is not a valid strftime pattern"));
                }
                TimeFormat::Pattern(pattern.to_string())
            }
            other => {
                return Err(format!(
                    "unknown time format '{other}' (rfc3339, rfc2822, unix_s, unix_ms, date, or a strftime pattern with %)"
                ));
            }
        })
    }
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `9:30:00` → `09:30:00` in an RFC 2822 time: WhenIWork's documented
/// examples drop the hour's leading zero, which RFC 2822 parsers refuse.
fn pad_hour(text: &str) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| match word.split_once(':') {
            Some((hour, rest)) if hour.len() == 1 && hour.chars().all(|c| c.is_ascii_digit()) => format!("0{hour}:{rest}"),
            _ => word.to_string(),
        })
        .collect();
    words.join(" ")
}

impl TimeFormat {
    /// Read a time written this way; a date or a time without an offset is
    /// read in `tz`. `None` when it is not such a time.
    pub fn parse(&self, value: &Value, tz: chrono_tz::Tz) -> Option<DateTime<FixedOffset>> {
        let text = match value {
            Value::String(s) => s.trim(),
            Value::Number(n) => return self.at_number(n.as_f64()?),
            _ => return None,
        };
        let local = |naive: NaiveDateTime| tz.from_local_datetime(&naive).earliest().map(|at| at.fixed_offset());
        match self {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text).ok(),
            TimeFormat::Rfc2822 => DateTime::parse_from_rfc2822(text).ok().or_else(|| DateTime::parse_from_rfc2822(&pad_hour(text)).ok()),
            TimeFormat::UnixS | TimeFormat::UnixMs => self.at_number(text.parse::<f64>().ok()?),
            TimeFormat::Date => local(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?),
            TimeFormat::Pattern(pattern) => DateTime::parse_from_str(text, pattern)
                .ok()
                .or_else(|| local(NaiveDateTime::parse_from_str(text, pattern).ok()?))
                .or_else(|| local(NaiveDate::parse_from_str(text, pattern).ok()?.and_hms_opt(0, 0, 0)?)),
        }
    }

    fn at_number(&self, n: f64) -> Option<DateTime<FixedOffset>> {
        if !n.is_finite() {
            return None;
        }
        let millis = match self {
            TimeFormat::UnixS => n * 1000.0,
            TimeFormat::UnixMs => n,
            _ => return None,
        };
        DateTime::<Utc>::from_timestamp_millis(millis as i64).map(|at| at.fixed_offset())
    }

    /// Write a time this way (a window's parameters).
    pub fn format(&self, at: DateTime<chrono_tz::Tz>) -> String {
        match self {
            TimeFormat::Rfc3339 => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            TimeFormat::Rfc2822 => at.to_rfc2822(),
            TimeFormat::UnixS => at.timestamp().to_string(),
            TimeFormat::UnixMs => at.timestamp_millis().to_string(),
            TimeFormat::Date => at.format("%Y-%m-%d").to_string(),
            TimeFormat::Pattern(pattern) => at.format(pattern).to_string(),
        }
    }

    /// Does this format say only the day (a window's end is then that day,
    /// not its last second)?
    pub fn is_date(&self) -> bool {
        match self {
            TimeFormat::Date => true,
            TimeFormat::Pattern(p) => !["%H", "%I", "%T", "%R", "%s", "%+", "%c", "%X", "%r"].iter().any(|t| p.contains(t)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let answer = json!({"data": {"items": [{"id": 7}, {"id": "b"}]}, "start": {"dateTime": "x"}, "none": null});
        let path = |p: &str| p.parse::<Path>().unwrap();
        assert_eq!(path("data.items.1.id").get(&answer), Some(&json!("b")));
        assert_eq!(path("start.dateTime").get(&answer), Some(&json!("x")));
        assert_eq!(path("$.start.dateTime").get(&answer), Some(&json!("x")));
        assert_eq!(path("$").get(&answer), Some(&answer));
        assert_eq!(path("none").get(&answer), None, "null is no value");
        assert_eq!(path("data.items.9").get(&answer), None);
        assert_eq!(path("data.items.0.id").text(&answer).as_deref(), Some("7"), "a numeric id as text");
        let mut owned = answer.clone();
        assert_eq!(path("data.items").take(&mut owned), Some(json!([{"id": 7}, {"id": "b"}])));
        assert_eq!(owned["data"], json!({}));
        let mut root = json!([1, 2]);
        assert_eq!(path("$").take(&mut root), Some(json!([1, 2])));
    }

    #[test]
    fn a_path_that_is_not_one_is_refused() {
        for bad in ["", ".", "a..b", "data items", "a.b.", "$$", "items[0]", "a/b"] {
            let error = bad.parse::<Path>().unwrap_err();
            assert!(error.contains("is not a path"), "{bad}: {error}");
        }
    }

    #[test]
    fn ids_are_strings_or_integers() {
        assert_eq!(id_text(&json!("shf_1")).as_deref(), Some("shf_1"));
        assert_eq!(id_text(&json!(27384)).as_deref(), Some("27384"));
        assert_eq!(id_text(&json!("")), None);
        assert_eq!(id_text(&json!(1.5)), None);
        assert_eq!(id_text(&json!(null)), None);
    }

    #[test]
    fn times_are_read_in_every_format() {
        let utc = chrono_tz::UTC;
        let ams: chrono_tz::Tz = "Europe/Amsterdam".parse().unwrap();
        let at = |f: &str, v: Value, tz| f.parse::<TimeFormat>().unwrap().parse(&v, tz).map(|t| t.with_timezone(&Utc).to_rfc3339());
        let expected = Some("2018-10-07T20:00:00+00:00".to_string());
        assert_eq!(at("rfc2822", json!("Sun, 07 Oct 2018 21:00:00 +0100"), utc), expected);
        assert_eq!(at("rfc2822", json!("Sun, 07 Oct 2018 9:00:00 -1100"), utc), expected, "an hour without its leading zero");
        assert_eq!(at("rfc3339", json!("2018-10-07T21:00:00+01:00"), utc), expected);
        assert_eq!(at("unix_s", json!(1538942400), utc), expected);
        assert_eq!(at("unix_s", json!("1538942400"), utc), expected);
        assert_eq!(at("unix_ms", json!(1538942400000_i64), utc), expected);
        assert_eq!(at("date", json!("2018-10-07"), utc), Some("2018-10-07T00:00:00+00:00".into()));
        assert_eq!(at("date", json!("2018-10-07"), ams), Some("2018-10-06T22:00:00+00:00".into()), "a day starts in the time zone");
        assert_eq!(at("%d/%m/%Y %H:%M", json!("07/10/2018 22:00"), ams), expected, "a pattern without offset: in the zone");
        assert_eq!(at("rfc3339", json!("Sun, 07 Oct 2018 21:00:00 +0100"), utc), None);
        assert_eq!(at("rfc2822", json!(""), utc), None);
        assert_eq!(at("unix_ms", json!(true), utc), None);
    }

    #[test]
    fn times_are_written_in_every_format() {
        let ams: chrono_tz::Tz = "Europe/Amsterdam".parse().unwrap();
        let at = ams.with_ymd_and_hms(2018, 10, 7, 22, 0, 0).unwrap();
        let write = |f: &str| f.parse::<TimeFormat>().unwrap().format(at);
        assert_eq!(write("rfc3339"), "2018-10-07T22:00:00+02:00");
        assert_eq!(write("rfc2822"), "Sun, 7 Oct 2018 22:00:00 +0200");
        assert_eq!(write("unix_s"), "1538942400");
        assert_eq!(write("unix_ms"), "1538942400000");
        assert_eq!(write("date"), "2018-10-07");
        assert_eq!(write("%Y-%m-%d %H:%M:%S"), "2018-10-07 22:00:00");
        assert!("%Y-%m-%d".parse::<TimeFormat>().unwrap().is_date());
        assert!(!"%Y-%m-%d %H:%M".parse::<TimeFormat>().unwrap().is_date());
    }

    #[test]
    fn an_unknown_time_format_is_refused() {
        assert!("iso".parse::<TimeFormat>().unwrap_err().contains("unknown time format 'iso'"));
        assert!("%Y-%Q".parse::<TimeFormat>().unwrap_err().contains("not a valid strftime pattern"));
    }
}
