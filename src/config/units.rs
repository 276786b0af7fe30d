//! Human-friendly units in configuration: durations (`"250ms"`, `"30s"`, `"5m"`)
//! and byte sizes (`65536`, `"16KiB"`, `"10MiB"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The longest duration accepted anywhere: ten years. Longer ones only
/// overflow clocks and date formats.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration with a unit (`"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`),
/// at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|_| {
        format!("{text:?} is not a duration (use a unit, such as \"250ms\", \"30s\" or \"5m\")")
    })?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is too long (at most 10 years)"));
    }
    Ok(duration)
}

/// A duration written with a unit, e.g. `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"250ms\", \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                parse_duration(text).map(HumanDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A size in bytes, written as a plain number or with a unit, e.g. `"16KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes, such as 65536, \"16KiB\" or \"10MiB\"")
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<Self::Value, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{bytes} is not a size (must not be negative)")))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                text.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|size| ByteSize(size.as_u64()))
                    .map_err(|_| {
                        E::custom(format!(
                            "{text:?} is not a size (use bytes or a unit, such as \"16KiB\" or \"10MiB\")"
                        ))
                    })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(text: &str) -> Result<Duration, String> {
        serde_json::from_value::<HumanDuration>(serde_json::json!(text))
            .map(|d| d.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert!(duration("5").unwrap_err().contains("is not a duration"));
        assert!(duration("10000y").unwrap_err().contains("too long"));
        assert!(duration("3650d").is_ok());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn parses_sizes_as_bytes_or_with_units() {
        let size = |v: serde_json::Value| serde_json::from_value::<ByteSize>(v).map(|s| s.0);
        assert_eq!(size(serde_json::json!(4096)).unwrap(), 4096);
        assert_eq!(size(serde_json::json!("16KiB")).unwrap(), 16 * 1024);
        assert_eq!(size(serde_json::json!("10MiB")).unwrap(), 10 * 1024 * 1024);
        assert!(size(serde_json::json!("lots")).is_err());
        assert!(size(serde_json::json!(-1)).is_err());
    }
}
