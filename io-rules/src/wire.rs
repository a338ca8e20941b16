//! The IOChaos action JSON exactly as Chaos Mesh's chaos-daemon sends it (PodIOChaos
//! `spec.actions`, the Go type `IOChaosAction`), before validation.
//!
//! Shape notes that matter for compatibility:
//! - attribute overrides are inline (`AttrOverrideSpec` is embedded with `json:",inline"`):
//!   `{"type":"attrOverride","perm":72,...}`; the IOChaos spec form under `attr` is accepted too;
//! - the controller fills `faults: [{errno, weight: 1}]` on every action, `errno` 0 when the
//!   experiment is not a fault, so `faults` is only read for `fault` actions;
//! - times are Go `Timespec` objects `{"sec": .., "nsec": ..}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

/// Every field an action may carry; anything else is refused so typos are not silently
/// ignored (a misspelt `percent` would otherwise mean 100%).
pub(super) const ACTION_FIELDS: [&str; 21] = [
    "type", "path", "methods", "percent", "faults", "latency", "mistake", "source", "attr", "ino",
    "size", "blocks", "atime", "mtime", "ctime", "kind", "perm", "nlink", "uid", "gid", "rdev",
];

/// The non-attribute fields of an action. Unknown keys are checked separately against
/// [`ACTION_FIELDS`] because the inline attributes are read from the same object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireAction {
    #[serde(rename = "type")]
    pub action_type: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub percent: Option<i64>,
    pub faults: Option<Vec<WireFault>>,
    pub latency: Option<String>,
    pub mistake: Option<WireMistake>,
    pub attr: Option<WireAttr>,
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireFault {
    pub errno: i64,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct WireMistake {
    pub filling: Option<String>,
    pub max_occurrences: Option<i64>,
    pub max_length: Option<i64>,
}

/// Chaos Mesh's `AttrOverrideSpec`, read either from the action itself (inline) or from
/// its `attr` object.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireAttr {
    pub ino: Option<u64>,
    pub size: Option<u64>,
    pub blocks: Option<u64>,
    pub atime: Option<WireTime>,
    pub mtime: Option<WireTime>,
    pub ctime: Option<WireTime>,
    pub kind: Option<String>,
    pub perm: Option<i64>,
    pub nlink: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub rdev: Option<u32>,
}

impl WireAttr {
    pub fn is_empty(&self) -> bool {
        self.ino.is_none()
            && self.size.is_none()
            && self.blocks.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
            && self.ctime.is_none()
            && self.kind.is_none()
            && self.perm.is_none()
            && self.nlink.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.rdev.is_none()
    }
}

/// A point in time. Accepted forms: Chaos Mesh's `{"sec": i64, "nsec": i64}`; Rust serde's
/// `SystemTime` form `{"secs_since_epoch", "nanos_since_epoch"}` (what toda expected);
/// integer Unix seconds; an RFC 3339 string.
#[derive(Debug, Clone, Copy)]
pub(super) struct WireTime(pub SystemTime);

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        time_from_value(&value)
            .map(WireTime)
            .map_err(D::Error::custom)
    }
}

fn time_from_value(value: &Value) -> Result<SystemTime, String> {
    const EXPECTED: &str =
        "expected {\"sec\": <unix seconds>, \"nsec\": <0..1e9>}, unix seconds, or an RFC 3339 time";
    match value {
        Value::Object(fields) => {
            let (sec_key, nsec_key) = if fields.contains_key("sec") || fields.contains_key("nsec") {
                ("sec", "nsec")
            } else {
                ("secs_since_epoch", "nanos_since_epoch")
            };
            if let Some(unknown) = fields.keys().find(|k| *k != sec_key && *k != nsec_key) {
                return Err(format!("unknown field {unknown:?}; {EXPECTED}"));
            }
            let sec = match fields.get(sec_key) {
                Some(sec) => sec
                    .as_i64()
                    .ok_or_else(|| format!("{sec_key} must be an integer"))?,
                None => return Err(format!("missing {sec_key}; {EXPECTED}")),
            };
            let nsec = match fields.get(nsec_key) {
                Some(nsec) => nsec
                    .as_i64()
                    .ok_or_else(|| format!("{nsec_key} must be an integer"))?,
                None => 0,
            };
            if !(0..1_000_000_000).contains(&nsec) {
                return Err(format!("{nsec_key} {nsec} is out of range 0..1000000000"));
            }
            unix_time(sec, nsec as u32)
        }
        Value::Number(number) => {
            let sec = number
                .as_i64()
                .ok_or_else(|| format!("{number} is not whole unix seconds"))?;
            unix_time(sec, 0)
        }
        Value::String(text) => humantime::parse_rfc3339_weak(text)
            .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}")),
        _ => Err(EXPECTED.to_owned()),
    }
}

fn unix_time(sec: i64, nsec: u32) -> Result<SystemTime, String> {
    let out_of_range = || format!("{sec}.{nsec:09} seconds is outside the representable time");
    let whole = Duration::from_secs(sec.unsigned_abs());
    let at_whole_second = if sec >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    }
    .ok_or_else(out_of_range)?;
    at_whole_second
        .checked_add(Duration::from_nanos(u64::from(nsec)))
        .ok_or_else(out_of_range)
}

/// The JSON type name of a value, for messages.
pub(super) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn time_forms() {
        let t = |v: Value| time_from_value(&v);
        let expected = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(t(json!({"sec": 1_700_000_000, "nsec": 5})), Ok(expected));
        assert_eq!(
            t(json!({"secs_since_epoch": 1_700_000_000, "nanos_since_epoch": 5})),
            Ok(expected)
        );
        assert_eq!(
            t(json!(1_700_000_000)),
            Ok(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            t(json!("2023-11-14T22:13:20Z")),
            Ok(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            t(json!({"sec": -1, "nsec": 500_000_000})),
            Ok(UNIX_EPOCH - Duration::from_millis(500))
        );
        assert!(t(json!({"sec": 1, "nsec": 1_000_000_000})).is_err());
        assert!(t(json!({"sec": "1"})).is_err());
        assert!(t(json!({"seconds": 1})).is_err());
        assert!(t(json!(true)).is_err());
        assert!(t(json!("yesterday")).is_err());
    }
}
