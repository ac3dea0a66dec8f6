//! The kernel command line: which slot this boot runs (`keelson.slot=A|B`).
//! A missing or bad value never stops the boot: slot A is used and the
//! problem is reported.

use std::fmt;

/// An A/B slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Slot A (`SYSTEM-A`).
    A,
    /// Slot B (`SYSTEM-B`).
    B,
}

impl Slot {
    /// The GPT partition name of the slot's root filesystem.
    pub fn partition(self) -> &'static str {
        match self {
            Slot::A => "SYSTEM-A",
            Slot::B => "SYSTEM-B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// What init reads from the kernel command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmdline {
    /// The slot to boot.
    pub slot: Slot,
    /// Problems found (each names the parameter and the value).
    pub warnings: Vec<String>,
}

/// Parses the kernel command line text (`/proc/cmdline`). Quoted values are
/// not special for `keelson.slot`: only `A` and `B` are valid. The last
/// `keelson.slot=` wins, as with the kernel's own parameters.
pub fn parse(text: &str) -> Cmdline {
    let mut warnings = Vec::new();
    let mut found: Option<&str> = None;
    for word in text.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("keelson.slot=") {
            found = Some(v);
        } else if word == "keelson.slot" {
            found = Some("");
        }
    }
    let slot = match found {
        Some("A") => Slot::A,
        Some("B") => Slot::B,
        Some(other) => {
            warnings.push(format!(
                "kernel command line: keelson.slot={other:?} is not A or B; booting slot A"
            ));
            Slot::A
        }
        None => {
            warnings
                .push("kernel command line: keelson.slot= is missing; booting slot A".to_string());
            Slot::A
        }
    };
    Cmdline { slot, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_comes_from_the_command_line_and_bad_values_fall_back_to_a() {
        let ok = parse("BOOT_IMAGE=/A/vmlinuz console=ttyS0,115200 keelson.slot=B panic=10\n");
        assert_eq!(ok.slot, Slot::B);
        assert!(ok.warnings.is_empty());
        assert_eq!(ok.slot.partition(), "SYSTEM-B");

        let last_wins = parse("keelson.slot=A keelson.slot=B");
        assert_eq!(last_wins.slot, Slot::B);

        let missing = parse("console=ttyS0");
        assert_eq!(missing.slot, Slot::A);
        assert!(missing.warnings[0].contains("missing"));

        for bad in [
            "keelson.slot=C",
            "keelson.slot=",
            "keelson.slot",
            "keelson.slot=a",
        ] {
            let c = parse(bad);
            assert_eq!(c.slot, Slot::A, "{bad}");
            assert_eq!(c.warnings.len(), 1, "{bad}");
            assert!(
                c.warnings[0].contains("not A or B"),
                "{bad}: {:?}",
                c.warnings
            );
        }
        // A look-alike parameter is not the slot.
        assert_eq!(parse("xkeelson.slot=B").slot, Slot::A);
    }
}
