//! Fields that take either an integer or a string, as Kubernetes does for
//! ports and quantities (`x-kubernetes-int-or-string`, checked by CEL rules
//! in the schema, so the API server refuses anything else).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::parse_duration;

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    /// Tried first: every integer from 0 to 2^64-1.
    Unsigned(u64),
    Signed(i64),
    String(String),
}

/// `auto` (the uplink's MTU) or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    Auto,
    Bytes(u32),
}

impl Serialize for Mtu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mtu::Auto => s.serialize_str("auto"),
            Mtu::Bytes(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Unsigned(n) => u32::try_from(n)
                .map(Mtu::Bytes)
                .map_err(|_| serde::de::Error::custom(format!("mtu {n} out of range"))),
            IntOrString::Signed(n) => {
                Err(serde::de::Error::custom(format!("mtu {n} out of range")))
            }
            IntOrString::String(s) if s == "auto" => Ok(Mtu::Auto),
            IntOrString::String(s) => s.parse().map(Mtu::Bytes).map_err(|_| {
                serde::de::Error::custom(format!("mtu {s:?} is neither auto nor a number"))
            }),
        }
    }
}

impl JsonSchema for Mtu {
    fn schema_name() -> Cow<'static, str> {
        "Mtu".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`auto` (the uplink's MTU) or bytes, 576..=65535.",
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == string ? self == 'auto' : (self >= 576 && self <= 65535)",
                "message": "mtu must be auto or a number of bytes from 576 to 65535",
            }],
        })
    }
}

/// Seconds (integer) or a Go-style duration string (`90s`, `5m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimeout(pub Duration);

impl Serialize for NodeTimeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole seconds as a number, else the largest unit that is exact.
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            s.serialize_u64(self.0.as_secs())
        } else if nanos.is_multiple_of(1_000_000) {
            s.serialize_str(&format!("{}ms", self.0.as_millis()))
        } else if nanos.is_multiple_of(1_000) {
            s.serialize_str(&format!("{}us", self.0.as_micros()))
        } else {
            s.serialize_str(&format!("{}ns", self.0.as_nanos()))
        }
    }
}

impl<'de> Deserialize<'de> for NodeTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Unsigned(n) => Ok(NodeTimeout(Duration::from_secs(n))),
            IntOrString::Signed(_) => {
                Err(serde::de::Error::custom("nodeTimeout must not be negative"))
            }
            IntOrString::String(s) => parse_duration(&s).map(NodeTimeout).ok_or_else(|| {
                serde::de::Error::custom(format!("nodeTimeout {s:?} is not a duration"))
            }),
        }
    }
}

impl JsonSchema for NodeTimeout {
    fn schema_name() -> Cow<'static, str> {
        "NodeTimeout".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Seconds, or a duration such as `90s`, `5m`, `1h30m`.",
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == string ? duration(self) >= duration('0s') : self >= 0",
                "message": "nodeTimeout must be seconds or a duration such as 90s, 5m",
            }],
        })
    }
}

impl fmt::Display for NodeTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_is_auto_or_bytes() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Mtu>(v);
        assert_eq!(parse(serde_json::json!("auto")).unwrap(), Mtu::Auto);
        assert_eq!(parse(serde_json::json!(1400)).unwrap(), Mtu::Bytes(1400));
        assert_eq!(parse(serde_json::json!("1400")).unwrap(), Mtu::Bytes(1400));
        assert!(parse(serde_json::json!("big")).is_err());
        assert!(parse(serde_json::json!(-1)).is_err());
        assert_eq!(serde_json::to_value(Mtu::Auto).unwrap(), "auto");
        assert_eq!(serde_json::to_value(Mtu::Bytes(9000)).unwrap(), 9000);
    }

    #[test]
    fn node_timeout_is_seconds_or_a_duration() {
        let parse = |v: serde_json::Value| serde_json::from_value::<NodeTimeout>(v).map(|t| t.0);
        assert_eq!(
            parse(serde_json::json!(300)).unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            parse(serde_json::json!("90s")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse(serde_json::json!("1h30m")).unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse(serde_json::json!("1.5m")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse(serde_json::json!("250ms")).unwrap(),
            Duration::from_millis(250)
        );
        for bad in ["", "5", "m", "5x", "-5s", "1h-5m"] {
            assert!(parse(serde_json::json!(bad)).is_err(), "{bad:?}");
        }
        assert!(parse(serde_json::json!(-1)).is_err());
    }
}
