//! Hostile and broken input: each is refused with a message that says what
//! and where, never a panic, within bounded time (and so bounded memory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use machine_config::{parse, ParseError, ParseErrorKind};

const HEAD: &str =
    "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n";

/// Generous even for a debug build on a shared 2-core machine; the real
/// times are printed and are in the milliseconds.
const BOUND: Duration = Duration::from_secs(5);

fn refuse(name: &str, bytes: &[u8]) -> ParseError {
    let start = Instant::now();
    let result = parse(bytes);
    let took = start.elapsed();
    let err = match result {
        Ok(_) => panic!("{name}: accepted"),
        Err(e) => e,
    };
    println!("{name}: {took:?}: {err}");
    assert!(took < BOUND, "{name}: took {took:?}");
    assert!(!err.message.is_empty(), "{name}: empty message");
    err
}

#[test]
fn empty_and_blank_input() {
    for (name, input) in [("empty", &b""[..]), ("blank", &b"  \n\n\t\n"[..])] {
        let err = refuse(name, input);
        assert_eq!(err.kind, ParseErrorKind::Empty);
        assert!(err.message.contains("empty"), "{err}");
    }
    let err = refuse("comments only", b"# nothing here\n\n  # at all\n");
    assert_eq!(err.kind, ParseErrorKind::Empty, "{err}");
}

#[test]
fn non_utf8_names_the_byte_offset_line_and_column() {
    let mut bytes = format!("{HEAD}  sysctls:\n    vm.x: \"").into_bytes();
    let offset = bytes.len();
    bytes.extend_from_slice(b"\xff\xfe\"\n");
    let err = refuse("non-UTF-8", &bytes);
    assert_eq!(err.kind, ParseErrorKind::NotUtf8);
    assert!(
        err.message.contains(&format!("byte offset {offset}")),
        "{err}"
    );
    let loc = err.location.unwrap();
    assert_eq!((loc.line, loc.column), (6, 12), "{err}");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut text = HEAD.to_string();
    text.push_str("  files:\n    - path: /etc/big\n      content: \"");
    text.push_str(&"x".repeat(10 * 1024 * 1024));
    text.push_str("\"\n");
    let err = refuse("10 MiB", text.as_bytes());
    assert_eq!(err.kind, ParseErrorKind::TooLarge);
    assert!(err.message.contains("4 MiB"), "{err}");
}

#[test]
fn a_large_but_legal_config_is_accepted_quickly() {
    let mut text = HEAD.to_string();
    text.push_str("  files:\n    - path: /etc/big\n      content: \"");
    text.push_str(&"x".repeat(3 * 1024 * 1024));
    text.push_str("\"\n");
    let start = Instant::now();
    let doc = parse(text.as_bytes()).unwrap();
    assert!(start.elapsed() < BOUND);
    assert_eq!(doc.config.machine.files[0].content.len(), 3 * 1024 * 1024);
}

#[test]
fn deep_nesting_is_refused_at_the_depth_limit() {
    // 10,000 nested flow sequences where a list of strings is expected.
    let text = format!(
        "{HEAD}  kernel:\n    args: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let err = refuse("10k flow nesting", text.as_bytes());
    assert!(err.location.is_some(), "{err}");
    assert!(
        matches!(
            err.kind,
            ParseErrorKind::Limit | ParseErrorKind::InvalidValue
        ),
        "{err}"
    );
    // 10,000 nested block sequences on one line.
    let text = format!("{HEAD}  files:\n    {}x\n", "- ".repeat(10_000));
    let err = refuse("10k block nesting", text.as_bytes());
    assert!(err.location.is_some(), "{err}");
    // 10,000 nested flow mappings at the top: nothing to match the schema.
    let text = format!("x: {}{}\n", "{a: ".repeat(10_000), "}".repeat(10_000));
    let err = refuse("10k mapping nesting", text.as_bytes());
    assert!(err.location.is_some(), "{err}");
}

#[test]
fn billion_laughs_is_refused() {
    let mut text = format!("{HEAD}  kernel:\n    args:\n");
    text.push_str("      - &l0 \"lol\"\n");
    for i in 1..=9 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        text.push_str(&format!("      - &l{i} [{refs}]\n"));
    }
    let err = refuse("billion laughs", text.as_bytes());
    assert!(err.location.is_some(), "{err}");
    assert!(err.path.starts_with("machine.kernel.args"), "{err}");
}

#[test]
fn alias_amplification_into_typed_fields_hits_the_replay_budget() {
    // Every value is well typed (a list of mirror URLs), so only the alias
    // budget stands between this input and 1,000,000 strings in memory.
    let mut text = format!("{HEAD}containerd:\n  registryMirrors:\n    r0.example: &urls\n");
    for i in 0..1_000 {
        text.push_str(&format!("      - https://m{i}.example\n"));
    }
    for i in 1..1_000 {
        text.push_str(&format!("    r{i}.example: *urls\n"));
    }
    let err = refuse("alias amplification", text.as_bytes());
    assert_eq!(err.kind, ParseErrorKind::Limit, "{err}");
    assert!(err.message.contains("alias"), "{err}");
    assert!(err.location.is_some(), "{err}");
}

#[test]
fn malformed_yaml_and_wrong_shapes() {
    let cases: Vec<(&str, String)> = vec![
        (
            "tab indentation",
            format!("{HEAD}network:\n\tinterfaces: []\n"),
        ),
        ("unclosed flow", format!("{HEAD}network: {{interfaces: [\n")),
        (
            "bad indentation",
            format!("{HEAD}  files:\n  - path: /etc/a\n     content: x\n"),
        ),
        ("NUL byte", format!("{HEAD}  sysctls: {{a.b: \"\0\"}}\n")),
        ("sequence for a mapping", format!("{HEAD}kubelet: [a, b]\n")),
        ("scalar for the root", "just a string\n".to_string()),
        ("list for the root", "- a\n- b\n".to_string()),
        (
            "unknown tag",
            format!("{HEAD}  swap: !!python/object:os.system {{}}\n"),
        ),
        ("huge float", format!("{HEAD}api:\n  port: 1e400\n")),
        ("negative number", format!("{HEAD}api:\n  port: -1\n")),
        ("unknown anchor", format!("{HEAD}kubelet: *nowhere\n")),
    ];
    for (name, text) in cases {
        let err = refuse(name, text.as_bytes());
        assert!(err.location.is_some(), "{name}: {err}");
    }
}

#[test]
fn arbitrary_byte_soup_never_panics() {
    // A cheap deterministic stand-in for the fuzzer in `cargo test`.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet = b"ab:- \n\t[]{}&*!|>'\"#,?%@`0123456789.\\\xff";
    for round in 0..2_000 {
        let len = (round % 200) + 1;
        let mut bytes = HEAD.as_bytes().to_vec();
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        if let Ok(doc) = parse(&bytes) {
            let _ = doc.validate();
        }
    }
}
