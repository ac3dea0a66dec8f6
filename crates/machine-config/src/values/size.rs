//! Disk size expressions: `>= 8GiB`, `< 2TB`, `1.5TB`, `21474836480`.
//!
//! The grammar is `[op] number [unit]`, spaces allowed around each part:
//! - `op`: `>=`, `<=`, `>`, `<`, `==`; none means exactly equal;
//! - `number`: digits, optionally with a decimal point and more digits
//!   (`8`, `1.5`), which must come to a whole number of bytes;
//! - `unit` (letters case-insensitive): none or `B` (bytes); `K`/`KB`,
//!   `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000); `KiB`, `MiB`, `GiB`,
//!   `TiB` (powers of 1024).
//!
//! A [`SizeExpr`] keeps the comparison and the size in bytes, not the unit
//! it was written in: `8GiB` and `8192MiB` are the same expression.
//! [`Display`](fmt::Display) writes the largest unit that shows the size
//! exactly (whole, or with at most three decimals below 1000; else bytes),
//! and parses back to an equal value.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Units and their factors, as written in messages.
const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("K", 1000),
    ("KB", 1000),
    ("M", 1000 * 1000),
    ("MB", 1000 * 1000),
    ("G", 1000 * 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("T", 1000 * 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// The units [`Display`](fmt::Display) picks from, largest first.
const DISPLAY_UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("TB", 1000 * 1000 * 1000 * 1000),
    ("GiB", 1 << 30),
    ("GB", 1000 * 1000 * 1000),
    ("MiB", 1 << 20),
    ("MB", 1000 * 1000),
    ("KiB", 1 << 10),
    ("KB", 1000),
];

/// The unit list every unknown-unit message shows.
const UNIT_HINT: &str = "use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";

/// Most decimal places a number may have (past trailing zeros): enough for
/// any size written by hand, and small enough for exact arithmetic.
pub const MAX_DECIMALS: usize = 24;

/// How a disk's size is compared with [`SizeExpr::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SizeOp {
    /// Exactly this size (written `==` or with no operator).
    Eq,
    /// At least (`>=`).
    Ge,
    /// At most (`<=`).
    Le,
    /// Larger than (`>`).
    Gt,
    /// Smaller than (`<`).
    Lt,
}

impl SizeOp {
    /// The operator as written (`>=`); `==` for [`SizeOp::Eq`].
    pub fn as_str(self) -> &'static str {
        match self {
            SizeOp::Eq => "==",
            SizeOp::Ge => ">=",
            SizeOp::Le => "<=",
            SizeOp::Gt => ">",
            SizeOp::Lt => "<",
        }
    }
}

/// A comparison of a disk's size with a number of bytes (`>= 8GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SizeExpr {
    /// The comparison.
    pub op: SizeOp,
    /// The size compared with, in bytes.
    pub bytes: u64,
}

impl SizeExpr {
    /// True when a disk of `size` bytes satisfies the expression.
    pub fn matches(&self, size: u64) -> bool {
        match self.op {
            SizeOp::Eq => size == self.bytes,
            SizeOp::Ge => size >= self.bytes,
            SizeOp::Le => size <= self.bytes,
            SizeOp::Gt => size > self.bytes,
            SizeOp::Lt => size < self.bytes,
        }
    }

    /// True when some disk (of at least one byte) can satisfy the
    /// expression: `< 1`, `<= 0`, `0` and `> 18446744073709551615` match
    /// none.
    pub fn is_satisfiable(&self) -> bool {
        match self.op {
            SizeOp::Eq | SizeOp::Le => self.bytes >= 1,
            SizeOp::Lt => self.bytes >= 2,
            SizeOp::Ge => true,
            SizeOp::Gt => self.bytes < u64::MAX,
        }
    }
}

/// Why a string is not a [`SizeExpr`]. Every message quotes the text and
/// says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing (or only spaces) was written.
    #[error("{0:?}: empty size (expected e.g. \">= 8GiB\")")]
    Empty(String),
    /// The comparison is not one of `>=`, `<=`, `>`, `<`, `==`.
    #[error("{text:?}: unknown comparison {op:?} (use >=, <=, >, <, ==, or none for exactly)")]
    BadOperator {
        /// The whole expression.
        text: String,
        /// The comparison as written.
        op: String,
    },
    /// No number after the comparison.
    #[error("{0:?}: expected a number of bytes, optionally with a unit (e.g. \">= 8GiB\")")]
    MissingNumber(String),
    /// The number is malformed (`1.2.3`, `.5`, `1.`).
    #[error(
        "{text:?}: {number:?} is not a number (digits with an optional decimal point, e.g. 1.5)"
    )]
    InvalidNumber {
        /// The whole expression.
        text: String,
        /// The number as written.
        number: String,
    },
    /// More than [`MAX_DECIMALS`] decimal places.
    #[error("{0:?}: too many decimal places (at most 24)")]
    TooManyDecimals(String),
    /// The unit is not one of the known ones.
    #[error("{text:?}: unknown unit {unit:?} ({UNIT_HINT})")]
    UnknownUnit {
        /// The whole expression.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// The size is a fraction of a byte (`1.5B`, `0.0001KB`).
    #[error("{0:?}: not a whole number of bytes")]
    NotWholeBytes(String),
    /// The size does not fit in 64 bits.
    #[error("{0:?}: larger than 18446744073709551615 bytes, the largest size")]
    TooLarge(String),
}

/// The factor of `unit` (letters compared case-insensitively; empty means
/// bytes).
fn unit_factor(unit: &str) -> Option<u64> {
    if unit.is_empty() {
        return Some(1);
    }
    UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(_, f)| *f)
}

/// The comparison at the start of `s` and what follows it.
fn split_op<'a>(text: &str, s: &'a str) -> Result<(SizeOp, &'a str), SizeError> {
    let end = s
        .find(|c: char| !matches!(c, '<' | '>' | '=' | '!'))
        .unwrap_or(s.len());
    let (op, rest) = s.split_at(end);
    let op = match op {
        "" => SizeOp::Eq,
        "==" => SizeOp::Eq,
        ">=" => SizeOp::Ge,
        "<=" => SizeOp::Le,
        ">" => SizeOp::Gt,
        "<" => SizeOp::Lt,
        other => {
            return Err(SizeError::BadOperator {
                text: text.to_string(),
                op: other.to_string(),
            })
        }
    };
    Ok((op, rest))
}

/// `digits` as a number, `None` when it does not fit in a `u128`.
fn decimal(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// `number` (already checked to be `digits[.digits]`) times `factor`, in
/// whole bytes.
fn to_bytes(text: &str, number: &str, factor: u64) -> Result<u64, SizeError> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let too_large = || SizeError::TooLarge(text.to_string());
    // u64::MAX has 20 digits: a longer integer part never fits.
    if int.len() > 20 {
        return Err(too_large());
    }
    if frac.len() > MAX_DECIMALS {
        return Err(SizeError::TooManyDecimals(text.to_string()));
    }
    let factor = u128::from(factor);
    let whole = decimal(int)
        .and_then(|i| i.checked_mul(factor))
        .ok_or_else(too_large)?;
    // frac < 10^24 and factor <= 2^40: the product fits in a u128.
    let scaled = decimal(frac)
        .and_then(|f| f.checked_mul(factor))
        .ok_or_else(too_large)?;
    let denominator = 10u128.pow(u32::try_from(frac.len()).map_err(|_| too_large())?);
    if !scaled.is_multiple_of(denominator) {
        return Err(SizeError::NotWholeBytes(text.to_string()));
    }
    let total = whole
        .checked_add(scaled / denominator)
        .ok_or_else(too_large)?;
    u64::try_from(total).map_err(|_| too_large())
}

impl FromStr for SizeExpr {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.is_empty() {
            return Err(SizeError::Empty(text.to_string()));
        }
        let (op, rest) = split_op(text, s)?;
        let rest = rest.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, unit) = rest.split_at(end);
        if number.is_empty() {
            return Err(SizeError::MissingNumber(text.to_string()));
        }
        let well_formed = {
            let mut parts = number.split('.');
            let int = parts.next().unwrap_or("");
            let frac = parts.next();
            !int.is_empty()
                && parts.next().is_none()
                && frac.is_none_or(|f| !f.is_empty() && !f.contains('.'))
        };
        if !well_formed {
            return Err(SizeError::InvalidNumber {
                text: text.to_string(),
                number: number.to_string(),
            });
        }
        let unit = unit.trim_start();
        let factor = unit_factor(unit).ok_or_else(|| SizeError::UnknownUnit {
            text: text.to_string(),
            unit: unit.to_string(),
        })?;
        let bytes = to_bytes(text, number, factor)?;
        Ok(SizeExpr { op, bytes })
    }
}

/// `bytes` in the largest unit that shows it exactly, as a whole number or
/// with at most three decimals below 1000 (`8GiB`, `1.5TB`, `1500GiB`),
/// else in bytes (`1234567B`).
pub(crate) fn format_bytes(bytes: u64) -> String {
    let b = u128::from(bytes);
    for (unit, factor) in DISPLAY_UNITS {
        let f = u128::from(*factor);
        // Whole, or a short fraction of a small number: `1234.567KB` reads
        // worse than `1234567B`.
        let exact = b.is_multiple_of(f);
        if b < f || !(b * 1000).is_multiple_of(f) || (!exact && b / f >= 1000) {
            continue;
        }
        let whole = b / f;
        let thousandths = (b % f) * 1000 / f;
        return if thousandths == 0 {
            format!("{whole}{unit}")
        } else {
            let frac = format!("{thousandths:03}");
            format!("{whole}.{}{unit}", frac.trim_end_matches('0'))
        };
    }
    format!("{bytes}B")
}

impl fmt::Display for SizeExpr {
    /// `>= 8GiB`, `< 1.5TB`; exactly-equal is written without an operator
    /// (`8GiB`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            SizeOp::Eq => f.write_str(&format_bytes(self.bytes)),
            op => write!(f, "{} {}", op.as_str(), format_bytes(self.bytes)),
        }
    }
}

impl Serialize for SizeExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SizeExpr {
    /// From a string, or a bare YAML number (a size in bytes).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for SizeExpr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SizeExpr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "minimum": 0,
            "description": "A disk size comparison: an optional >=, <=, >, < or == (none: \
                            exactly), a number and a unit (B, KB, MB, GB, TB: powers of 1000; \
                            KiB, MiB, GiB, TiB: powers of 1024; none: bytes), e.g. \">= 8GiB\"."
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn size(s: &str) -> SizeExpr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn operators_numbers_and_units() {
        let gib = 1u64 << 30;
        assert_eq!(
            size(">= 8GiB"),
            SizeExpr {
                op: SizeOp::Ge,
                bytes: 8 * gib
            }
        );
        assert_eq!(size(">=8GiB"), size("  >=  8  gib  "));
        assert_eq!(size("<= 1TB").op, SizeOp::Le);
        assert_eq!(size("> 1").op, SizeOp::Gt);
        assert_eq!(size("< 1k").op, SizeOp::Lt);
        assert_eq!(size("== 20GB"), size("20GB"));
        assert_eq!(size("20GB").op, SizeOp::Eq);
        assert_eq!(size("1.5TB").bytes, 1_500_000_000_000);
        assert_eq!(size("1.5 TiB").bytes, 3 << 39);
        assert_eq!(size("1536").bytes, 1536);
        assert_eq!(size("1536 b").bytes, 1536);
        assert_eq!(size("2K").bytes, 2000);
        assert_eq!(size("2kb").bytes, 2000);
        assert_eq!(size("3M").bytes, 3_000_000);
        assert_eq!(size("4G").bytes, 4_000_000_000);
        assert_eq!(size("5T").bytes, 5_000_000_000_000);
        assert_eq!(size("1KiB").bytes, 1024);
        assert_eq!(size("1MIB").bytes, 1 << 20);
        assert_eq!(size("0.5KiB").bytes, 512);
        assert_eq!(size("1.50000GB").bytes, 1_500_000_000);
        assert_eq!(size("007GB").bytes, 7_000_000_000);
        assert_eq!(size("18446744073709551615").bytes, u64::MAX);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |s: &str| s.parse::<SizeExpr>().unwrap_err().to_string();
        assert_eq!(
            err("8 GiBs"),
            r#""8 GiBs": unknown unit "GiBs" (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"#
        );
        assert_eq!(err(""), r#""": empty size (expected e.g. ">= 8GiB")"#);
        assert_eq!(err("  "), r#""  ": empty size (expected e.g. ">= 8GiB")"#);
        assert_eq!(
            err("=> 8GiB"),
            r#""=> 8GiB": unknown comparison "=>" (use >=, <=, >, <, ==, or none for exactly)"#
        );
        assert!(err("= 8GiB").contains(r#"unknown comparison "=""#));
        assert!(err("!= 8GiB").contains(r#"unknown comparison "!=""#));
        assert!(err(">= GiB").contains("expected a number of bytes"));
        assert!(err("-8GB").contains("expected a number of bytes"));
        assert!(err("1.2.3GB").contains(r#""1.2.3" is not a number"#));
        assert!(err(".5GB").contains(r#"".5" is not a number"#));
        assert!(err("5.GB").contains(r#""5." is not a number"#));
        assert!(err("1.5B").contains("not a whole number of bytes"));
        assert!(err("0.0001KB").contains("not a whole number of bytes"));
        assert!(err("18446744073709551616").contains("larger than 18446744073709551615"));
        assert!(err("99999999TB").contains("larger than"));
        assert!(err("123456789012345678901234567890").contains("larger than"));
        assert!(err("1.0000000000000000000000001KB").contains("too many decimal places"));
        assert!(err("8 GiB extra").contains(r#"unknown unit "GiB extra""#));
        assert!(err("8 EiB").contains(r#"unknown unit "EiB""#));
        assert!(err("8 Gi").contains(r#"unknown unit "Gi""#));
    }

    #[test]
    fn display_picks_an_exact_unit() {
        assert_eq!(size(">= 8GiB").to_string(), ">= 8GiB");
        assert_eq!(size(">=8192MiB").to_string(), ">= 8GiB");
        assert_eq!(size("1.5TB").to_string(), "1.5TB");
        assert_eq!(size("< 1.25GiB").to_string(), "< 1.25GiB");
        assert_eq!(size("20GB").to_string(), "20GB");
        assert_eq!(size("500GB").to_string(), "500GB");
        assert_eq!(size("1TiB").to_string(), "1TiB");
        assert_eq!(size("1234567").to_string(), "1234567B");
        assert_eq!(size("0").to_string(), "0B");
        assert_eq!(size("== 999").to_string(), "999B");
        assert_eq!(size("1000").to_string(), "1KB");
        assert_eq!(size("1500").to_string(), "1.5KB");
        assert_eq!(size("1536").to_string(), "1.5KiB");
        assert_eq!(size("1500GiB").to_string(), "1500GiB");
        assert_eq!(size("123456GB").to_string(), "123.456TB");
        assert_eq!(size("21474836480").to_string(), "20GiB");
    }

    #[test]
    fn matching_and_satisfiability() {
        let ge = size(">= 8GiB");
        assert!(ge.matches(8 << 30) && ge.matches(9 << 30) && !ge.matches((8 << 30) - 1));
        let lt = size("< 1TB");
        assert!(lt.matches(999_999_999_999) && !lt.matches(1_000_000_000_000));
        assert!(size("20GB").matches(20_000_000_000) && !size("20GB").matches(20_000_000_001));
        assert!(size("<= 2").matches(2) && !size("<= 2").matches(3));
        assert!(size("> 2").matches(3) && !size("> 2").matches(2));
        for none in ["< 1", "< 0", "<= 0", "0", "== 0", "> 18446744073709551615"] {
            assert!(!size(none).is_satisfiable(), "{none}");
        }
        for some in ["< 2", "<= 1", "1", ">= 0", "> 0", ">= 18446744073709551615"] {
            assert!(size(some).is_satisfiable(), "{some}");
        }
    }
}
