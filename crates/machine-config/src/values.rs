//! Scalar value types of the schema that carry their own syntax: CIDRs,
//! durations, file modes and disk size expressions ([`size`]).
//!
//! Each parses in `Deserialize`, so a malformed value is rejected by the YAML
//! parser itself and the error carries the parser's line and column. Each
//! serializes back to the same text form, so a written config parses back to
//! an equal value.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod size;

pub use size::{SizeError, SizeExpr, SizeOp};

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr` and a
/// string JSON Schema with a pattern-free description.
macro_rules! string_form {
    ($ty:ty, $schema_name:literal, $desc:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $schema_name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $desc })
            }
        }
    };
}

/// An IP network in CIDR form, IPv4 or IPv6: an address and a prefix length
/// (`10.0.0.5/24`, `fd00::1/64`). The address keeps its host bits: on an
/// interface `10.0.0.5/24` means "address 10.0.0.5 on a /24".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The address part.
    pub addr: IpAddr,
    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// Why a string is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 or IPv6 CIDR (expected ADDRESS/PREFIX, e.g. 10.0.0.5/24)")]
pub struct CidrError(pub String);

impl Cidr {
    /// Maximum prefix length for this address family.
    pub fn max_prefix(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// True when `ip` lies inside this network (same family, same prefix bits).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = prefix_mask_u32(self.prefix);
                (u32::from(net) & mask) == (u32::from(*ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = prefix_mask_u128(self.prefix);
                (u128::from(net) & mask) == (u128::from(*ip) & mask)
            }
            _ => false,
        }
    }

    /// The network address (host bits cleared), as a CIDR.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & prefix_mask_u32(self.prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & prefix_mask_u128(self.prefix)).into()),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

fn prefix_mask_u32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn prefix_mask_u128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        // Digits only: `u8::from_str` would accept a leading `+`.
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let cidr = Cidr { addr, prefix };
        if prefix > cidr.max_prefix() {
            return Err(bad());
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

string_form!(
    Cidr,
    "Cidr",
    "An IPv4 or IPv6 address with prefix length, e.g. 10.0.0.5/24 or fd00::5/64."
);

/// A span of time written with a unit: `500ms`, `30s`, `5m`, `1h`. A bare
/// number is refused: the unit must be explicit. Serializes in the largest
/// unit that represents it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

/// Why a string is not a [`Duration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration (expected a whole number with a unit: ms, s, m or h, e.g. 30s)")]
pub struct DurationError(pub String);

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }

    /// The underlying standard duration.
    pub fn get(&self) -> StdDuration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DurationError(s.to_string());
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = s.split_at(split);
        if num.is_empty() || num.len() > 12 {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        let millis = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => None,
        }
        .ok_or_else(bad)?;
        Ok(Duration(StdDuration::from_millis(millis)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

string_form!(
    Duration,
    "Duration",
    "A duration with a unit: ms, s, m or h (e.g. 500ms, 30s, 5m)."
);

/// A Unix permission mode written in octal as a string, `"0644"` or
/// `"0600"` (at most 4 octal digits; setuid/setgid/sticky allowed but
/// flagged by validation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileMode(pub u32);

/// Why a string is not a [`FileMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a file mode (expected up to 4 octal digits as a string, e.g. \"0644\")")]
pub struct FileModeError(pub String);

impl Default for FileMode {
    /// `0644`: owner read/write, everyone else read.
    fn default() -> Self {
        FileMode(0o644)
    }
}

impl FromStr for FileMode {
    type Err = FileModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FileModeError(s.to_string());
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(bad());
        }
        u32::from_str_radix(s, 8).map(FileMode).map_err(|_| bad())
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

string_form!(
    FileMode,
    "FileMode",
    "A Unix file mode as an octal string, e.g. \"0644\"."
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cidr_round_trips_and_rejects_garbage() {
        for ok in [
            "10.0.0.5/24",
            "0.0.0.0/0",
            "fd00::1/64",
            "::/0",
            "10.1.2.3/32",
        ] {
            let c: Cidr = ok.parse().unwrap();
            assert_eq!(c.to_string(), ok);
        }
        for bad in [
            "10.0.0.300/24",
            "10.0.0.1",
            "10.0.0.1/33",
            "fd00::1/129",
            "10.0.0.1/+8",
            "10.0.0.1/",
            "/24",
            "x/1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cidr_contains_respects_prefix_and_family() {
        let net: Cidr = "192.168.10.7/24".parse().unwrap();
        assert!(net.contains(&"192.168.10.1".parse().unwrap()));
        assert!(!net.contains(&"192.168.11.1".parse().unwrap()));
        assert!(!net.contains(&"fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"8.8.8.8".parse().unwrap()));
        assert_eq!(net.network().to_string(), "192.168.10.0/24");
    }

    #[test]
    fn duration_units() {
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration::from_secs(30));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration::from_secs(300));
        assert_eq!("1500ms".parse::<Duration>().unwrap().to_string(), "1500ms");
        assert_eq!("120s".parse::<Duration>().unwrap().to_string(), "2m");
        for bad in ["30", "s", "-1s", "1.5s", "1d", "99999999999999999h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn file_mode_octal() {
        assert_eq!("0644".parse::<FileMode>().unwrap(), FileMode(0o644));
        assert_eq!(FileMode(0o600).to_string(), "0600");
        for bad in ["0988", "", "12345", "rw"] {
            assert!(bad.parse::<FileMode>().is_err(), "{bad} accepted");
        }
    }
}
