//! Properties of the install-disk choice and of size expressions: a size
//! written out parses back to itself, any text parses or fails without
//! panicking, a read-only disk is never chosen, and a path chooses exactly
//! the disk it names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use machine_config::install_disk::{by_id_names, select, DiskBus, DiskFacts, SelectError};
use machine_config::schema::{DiskSelector, DiskTarget};
use machine_config::{SizeExpr, SizeOp};
use proptest::option;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = SizeOp> {
    prop::sample::select(vec![
        SizeOp::Eq,
        SizeOp::Ge,
        SizeOp::Le,
        SizeOp::Gt,
        SizeOp::Lt,
    ])
}

fn size_expr() -> impl Strategy<Value = SizeExpr> {
    let bytes = prop_oneof![
        any::<u64>(),
        (0u64..100_000, 0u32..5).prop_map(|(n, p)| n * 1024u64.pow(p)),
        (0u64..100_000, 0u32..5).prop_map(|(n, p)| n * 1000u64.pow(p)),
        (1u64..100_000, 1u32..5).prop_map(|(n, p)| n * 1024u64.pow(p) / 8),
    ];
    (op(), bytes).prop_map(|(op, bytes)| SizeExpr { op, bytes })
}

/// (unit as written, factor): every spelling, in mixed case.
fn unit() -> impl Strategy<Value = (String, u64)> {
    let units: Vec<(&str, u64)> = vec![
        ("", 1),
        ("B", 1),
        ("K", 1000),
        ("KB", 1000),
        ("M", 1_000_000),
        ("MB", 1_000_000),
        ("G", 1_000_000_000),
        ("GB", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("TB", 1_000_000_000_000),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
    ];
    (prop::sample::select(units), any::<u64>()).prop_map(|((u, f), case)| {
        let written = u
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if case >> (i % 64) & 1 == 1 {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        (written, f)
    })
}

fn spaces() -> impl Strategy<Value = String> {
    "[ ]{0,2}"
}

fn disk() -> impl Strategy<Value = DiskFacts> {
    (
        "[a-z]{2,4}[0-9]?",
        prop_oneof![any::<u64>(), (1u64..64).prop_map(|g| g << 30)],
        option::of(prop::sample::select(vec![
            "QEMU HARDDISK",
            "Samsung SSD",
            " QEMU ",
        ])),
        option::of("[a-z0-9-]{1,8}"),
        prop::collection::vec("[a-z]{2,6}-[a-z0-9]{1,4}", 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(name, size_bytes, model, serial, by_id, removable, read_only)| DiskFacts {
                name,
                size_bytes,
                model: model.map(str::to_string),
                serial,
                by_id,
                removable,
                read_only,
            },
        )
}

fn target() -> impl Strategy<Value = DiskTarget> {
    prop_oneof![
        "/dev/[a-z]{2,4}[0-9]?".prop_map(DiskTarget::Path),
        "[a-z]{2,6}-[a-z0-9]{1,4}".prop_map(|id| DiskTarget::Path(format!("/dev/disk/by-id/{id}"))),
        (
            option::of(size_expr()),
            option::of(prop::sample::select(vec!["QEMU HARDDISK", "Samsung SSD"])),
            option::of("[a-z0-9-]{1,8}"),
            option::of("[a-z]{2,6}-[a-z0-9]{1,4}"),
        )
            .prop_map(|(size, model, serial, by_id)| {
                DiskTarget::Selector(DiskSelector {
                    size,
                    model: model.map(str::to_string),
                    serial,
                    by_id,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn size_display_parses_back_equal(x in size_expr()) {
        let text = x.to_string();
        let back: SizeExpr = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, x, "{}", text);
    }

    #[test]
    fn size_parse_never_panics(s in "[ <>=!0-9.a-zA-Z]{0,16}|\\PC{0,16}") {
        if let Ok(x) = s.parse::<SizeExpr>() {
            // Whatever parses displays to something that parses equal.
            prop_assert_eq!(x.to_string().parse::<SizeExpr>().unwrap(), x);
        }
    }

    #[test]
    fn written_sizes_parse_to_number_times_unit(
        op in op(),
        n in 0u64..2_000_000,
        (unit, factor) in unit(),
        (s0, s1, s2, s3) in (spaces(), spaces(), spaces(), spaces()),
        spell_eq in any::<bool>(),
    ) {
        // Exactly-equal is written `==` or with no operator.
        let op_text = if op == SizeOp::Eq && !spell_eq { "" } else { op.as_str() };
        let text = format!("{s0}{op_text}{s1}{n}{s2}{unit}{s3}");
        let x: SizeExpr = text.parse().map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(x, SizeExpr { op, bytes: n * factor });
    }

    #[test]
    fn unknown_units_are_named(n in 0u64..1000, unit in "[a-zA-Z]{1,5}") {
        let known = ["b", "k", "kb", "m", "mb", "g", "gb", "t", "tb", "kib", "mib", "gib", "tib"];
        prop_assume!(!known.contains(&unit.to_ascii_lowercase().as_str()));
        let err = format!("{n} {unit}").parse::<SizeExpr>().unwrap_err().to_string();
        prop_assert_eq!(
            err,
            format!("\"{n} {unit}\": unknown unit \"{unit}\" (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        );
    }

    #[test]
    fn select_never_returns_a_read_only_disk(
        t in target(),
        disks in prop::collection::vec(disk(), 0..6),
    ) {
        match select(&t, &disks) {
            Ok(d) => prop_assert!(!d.read_only, "{:?}", d),
            Err(SelectError::NoMatch { candidates, read_only, .. }) => {
                // Every disk is listed, and every read-only one that was
                // wanted is named.
                prop_assert_eq!(candidates.len(), disks.len());
                for name in read_only {
                    prop_assert!(disks.iter().any(|d| d.name == name && d.read_only));
                }
            }
            Err(SelectError::Ambiguous { matches, .. }) => {
                prop_assert!(matches.len() >= 2);
                for name in matches {
                    prop_assert!(disks.iter().any(|d| d.name == name && !d.read_only));
                }
            }
        }
    }

    #[test]
    fn a_path_selects_exactly_the_named_disk(
        disks in prop::collection::vec(disk(), 1..6),
        pick in any::<prop::sample::Index>(),
    ) {
        // Names made unique, one disk picked and made writable.
        let mut disks: Vec<DiskFacts> = disks
            .into_iter()
            .enumerate()
            .map(|(i, mut d)| {
                d.name = format!("{}{i}", d.name);
                d
            })
            .collect();
        let i = pick.index(disks.len());
        disks[i].read_only = false;
        let name = disks[i].name.clone();
        let chosen = select(&DiskTarget::Path(format!("/dev/{name}")), &disks).unwrap();
        prop_assert!(std::ptr::eq(chosen, &disks[i]));
        // And through a by-id name only it has.
        disks[i].by_id.push(format!("virtio-unique-{name}"));
        let by_id = DiskTarget::Path(format!("/dev/disk/by-id/virtio-unique-{name}"));
        prop_assert!(std::ptr::eq(select(&by_id, &disks).unwrap(), &disks[i]));
        // Read-only, it is refused with the reason.
        disks[i].read_only = true;
        let err = select(&DiskTarget::Path(format!("/dev/{name}")), &disks).unwrap_err();
        let read_only_note = format!("({name} matches but is read-only)");
        prop_assert!(err.to_string().contains(&read_only_note), "{}", err);
    }

    #[test]
    fn by_id_names_are_clean(
        bus in prop::sample::select(vec![DiskBus::Virtio, DiskBus::Ata, DiskBus::Nvme, DiskBus::Scsi, DiskBus::Usb, DiskBus::Other]),
        model in option::of("\\PC{0,12}"),
        serial in option::of("\\PC{0,12}"),
        wwid in option::of("[ -~]{0,12}"),
    ) {
        for name in by_id_names(bus, model.as_deref(), serial.as_deref(), wwid.as_deref()) {
            prop_assert!(!name.contains('/') && !name.contains(char::is_whitespace), "{:?}", name);
            let prefix = match bus {
                DiskBus::Virtio => "virtio-",
                DiskBus::Ata => "ata-",
                DiskBus::Nvme => "nvme-",
                DiskBus::Scsi => "scsi-",
                DiskBus::Usb => "usb-",
                DiskBus::Other => "wwn-",
            };
            let rest = name.strip_prefix(prefix).or_else(|| name.strip_prefix("wwn-"));
            prop_assert!(rest.is_some_and(|r| !r.is_empty()), "{:?}", name);
            let safe = |c: char| c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii();
            prop_assert!(name.chars().all(safe), "{:?}", name);
        }
    }
}

#[test]
fn the_example_selector_picks_the_only_disk_it_fits() {
    let facts = |name: &str, gib: u64, serial: &str| DiskFacts {
        name: name.into(),
        size_bytes: gib << 30,
        model: None,
        serial: Some(serial.into()),
        by_id: by_id_names(DiskBus::Virtio, None, Some(serial), None),
        removable: false,
        read_only: false,
    };
    let disks = [
        facts("vda", 4, "keelson-boot"),
        facts("vdb", 20, "keelson-root"),
        facts("vdc", 20, "scratch"),
    ];
    let sel: DiskTarget = DiskTarget::Selector(DiskSelector {
        size: Some(">= 8GiB".parse().unwrap()),
        by_id: Some("virtio-keelson-root".into()),
        ..DiskSelector::default()
    });
    assert_eq!(select(&sel, &disks).unwrap().name, "vdb");
    let wide = DiskTarget::Selector(DiskSelector {
        size: Some(">= 8GiB".parse().unwrap()),
        ..DiskSelector::default()
    });
    assert_eq!(
        select(&wide, &disks).unwrap_err().to_string(),
        "install disk size >= 8GiB matches 2 disks: vdb, vdc; narrow the selector"
    );
}
