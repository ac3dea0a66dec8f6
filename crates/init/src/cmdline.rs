//! The kernel command line: which slot this boot runs (`keelson.slot=A|B`),
//! or, for a network boot, where the root comes from (`keelson.root=URL`
//! with `keelson.root_sha256=HEX`) and where the config may come from
//! (`keelson.config=URL`). A missing or bad slot never stops the boot: slot
//! A is used and the problem is reported. A bad network root is an error
//! stage 1 reports and cannot boot past (nothing to mount).

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

/// A root filesystem fetched over the network (`keelson.root=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRoot {
    /// The squashfs' URL (`http://host[:port]/path`).
    pub url: String,
    /// Its SHA-256, lower-case hex (`keelson.root_sha256=`).
    pub sha256: String,
    /// SHA-256 of the install payload's manifest (`media.json` beside the
    /// root), when the boot script names one (`keelson.media_sha256=`).
    pub install_sha256: Option<String>,
}

/// A root on boot media (`keelson.media=VOLUME_ID
/// keelson.media_sha256=HEX`): the ISO 9660 volume to look for and the
/// SHA-256 of its `keelson/media.json`, which lists the root and the
/// install payload with their own hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRoot {
    /// The ISO 9660 volume id (`KEELSON_0_1_0`).
    pub volume_id: String,
    /// SHA-256 of `keelson/media.json`, lower-case hex.
    pub manifest_sha256: String,
}

/// What init reads from the kernel command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmdline {
    /// The slot to boot.
    pub slot: Slot,
    /// Problems found (each names the parameter and the value).
    pub warnings: Vec<String>,
    /// The network root, when `keelson.root=` asks for one and is valid.
    pub net_root: Option<NetRoot>,
    /// Why `keelson.root=` / `keelson.root_sha256=` cannot be used.
    pub net_root_error: Option<String>,
    /// Where to fetch the first config from (`keelson.config=`), if valid.
    pub config_url: Option<String>,
    /// The boot media root, when `keelson.media=` asks for one and is valid.
    pub media: Option<MediaRoot>,
    /// Why `keelson.media=` / `keelson.media_sha256=` cannot be used.
    pub media_error: Option<String>,
}

impl Cmdline {
    /// Whether this is a network boot (`keelson.root=` present, valid or
    /// not): the slot does not matter then.
    pub fn network_boot(&self) -> bool {
        self.net_root.is_some() || self.net_root_error.is_some()
    }

    /// Whether the root comes from boot media (`keelson.media=` present,
    /// valid or not, and no network root).
    pub fn media_boot(&self) -> bool {
        !self.network_boot() && (self.media.is_some() || self.media_error.is_some())
    }
}

/// The last value of `key=` on the command line (`Some("")` for a bare
/// `key`), as the kernel does for its own parameters.
fn last_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for word in text.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            found = Some(v);
        } else if word == key {
            found = Some("");
        }
    }
    found
}

/// Checks a plain-HTTP URL of the command line: `http://HOST[:PORT]/PATH`.
/// Plain HTTP on purpose: stage 1 checks what it fetched by hash, and has
/// no clock or CA store for TLS.
pub fn check_http_url(param: &str, url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("kernel command line: {param}={url:?}: {why}"));
    let Some(rest) = url.strip_prefix("http://") else {
        return bad("only http:// URLs are fetched (the SHA-256 protects the root)");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return bad("no host (expected http://HOST[:PORT]/PATH)");
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        if !authority.starts_with('[') && port.parse::<u16>().map_or(true, |p| p == 0) {
            return bad("the port is not a number from 1 to 65535");
        }
    }
    if path.len() <= 1 {
        return bad("no path to a file");
    }
    if url.bytes().any(|b| b.is_ascii_control()) {
        return bad("control characters");
    }
    // What the fetch itself needs (an IP host: init has no resolver).
    if let Err(e) = crate::netroot::fetch::target(url) {
        return Err(format!("kernel command line: {param}: {e}"));
    }
    Ok(())
}

/// Parses `keelson.root=` and `keelson.root_sha256=`.
fn net_root(text: &str) -> (Option<NetRoot>, Option<String>) {
    let Some(url) = last_value(text, "keelson.root") else {
        return (None, None);
    };
    if let Err(e) = check_http_url("keelson.root", url) {
        return (None, Some(e));
    }
    let sha = last_value(text, "keelson.root_sha256").unwrap_or_default();
    if sha.is_empty() {
        return (
            None,
            Some(
                "kernel command line: keelson.root= needs keelson.root_sha256=<64 hex digits>: a network root is only used after its hash is checked".into(),
            ),
        );
    }
    let sha256 = match sha256_param("keelson.root_sha256", sha) {
        Ok(s) => s,
        Err(e) => return (None, Some(e)),
    };
    let install_sha256 = match last_value(text, "keelson.media_sha256") {
        None => None,
        Some(v) => match sha256_param("keelson.media_sha256", v) {
            Ok(s) => Some(s),
            Err(e) => return (None, Some(e)),
        },
    };
    (
        Some(NetRoot {
            url: url.to_string(),
            sha256,
            install_sha256,
        }),
        None,
    )
}

/// 64 hex digits, or an error naming `param`.
fn sha256_param(param: &str, value: &str) -> Result<String, String> {
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "kernel command line: {param}={value:?} is not 64 hex digits"
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Parses `keelson.media=` and `keelson.media_sha256=`.
fn media(text: &str) -> (Option<MediaRoot>, Option<String>) {
    let Some(volume_id) = last_value(text, "keelson.media") else {
        return (None, None);
    };
    if volume_id.is_empty()
        || volume_id.len() > 32
        || !volume_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return (
            None,
            Some(format!(
                "kernel command line: keelson.media={volume_id:?} is not an ISO 9660 volume id (1 to 32 of A-Z, 0-9, _)"
            )),
        );
    }
    let Some(sha) = last_value(text, "keelson.media_sha256") else {
        return (
            None,
            Some("kernel command line: keelson.media= needs keelson.media_sha256=<64 hex digits>: the media's manifest is only used after its hash is checked".into()),
        );
    };
    match sha256_param("keelson.media_sha256", sha) {
        Ok(manifest_sha256) => (
            Some(MediaRoot {
                volume_id: volume_id.to_string(),
                manifest_sha256,
            }),
            None,
        ),
        Err(e) => (None, Some(e)),
    }
}

/// Parses the kernel command line text (`/proc/cmdline`). Quoted values are
/// not special for `keelson.slot`: only `A` and `B` are valid. The last
/// `keelson.slot=` wins, as with the kernel's own parameters.
pub fn parse(text: &str) -> Cmdline {
    let mut warnings = Vec::new();
    let (net_root, net_root_error) = net_root(text);
    let (media, media_error) = media(text);
    let config_url = last_value(text, "keelson.config").and_then(|url| {
        match check_http_url("keelson.config", url) {
            Ok(()) => Some(url.to_string()),
            Err(e) => {
                warnings.push(format!("{e}; waiting for a config in maintenance mode"));
                None
            }
        }
    });
    let slot = match last_value(text, "keelson.slot") {
        Some("A") => Slot::A,
        Some("B") => Slot::B,
        Some(other) => {
            warnings.push(format!(
                "kernel command line: keelson.slot={other:?} is not A or B; booting slot A"
            ));
            Slot::A
        }
        // A network or media boot has no slot.
        None if net_root.is_some()
            || net_root_error.is_some()
            || media.is_some()
            || media_error.is_some() =>
        {
            Slot::A
        }
        None => {
            warnings
                .push("kernel command line: keelson.slot= is missing; booting slot A".to_string());
            Slot::A
        }
    };
    Cmdline {
        slot,
        warnings,
        net_root,
        net_root_error,
        config_url,
        media,
        media_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_media_root_needs_a_volume_id_and_the_manifest_hash() {
        let sha = "ab".repeat(32);
        let ok = parse(&format!(
            "console=ttyS0 keelson.media=KEELSON_0_1_0 keelson.media_sha256={}",
            sha.to_uppercase()
        ));
        assert!(ok.media_boot());
        assert!(!ok.network_boot());
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
        let m = ok.media.unwrap();
        assert_eq!(m.volume_id, "KEELSON_0_1_0");
        assert_eq!(m.manifest_sha256, sha);

        let no_hash = parse("keelson.media=KEELSON");
        assert!(no_hash.media_boot());
        assert!(no_hash
            .media_error
            .unwrap()
            .contains("keelson.media_sha256="));
        let bad_id = parse(&format!(
            "keelson.media=keelson/1 keelson.media_sha256={sha}"
        ));
        assert!(bad_id.media_error.unwrap().contains("volume id"));
        let short = parse("keelson.media=K keelson.media_sha256=abc");
        assert!(short.media_error.unwrap().contains("64 hex digits"));
        assert!(!parse("keelson.slot=A").media_boot());
    }

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
        assert!(!parse("keelson.slot=B").network_boot());
    }

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_network_root_needs_an_http_url_and_its_hash() {
        let ok = parse(&format!(
            "console=ttyS0 keelson.root=http://10.0.2.100:8080/rootfs.squashfs keelson.root_sha256={}",
            SHA.to_uppercase()
        ));
        assert_eq!(
            ok.net_root,
            Some(NetRoot {
                url: "http://10.0.2.100:8080/rootfs.squashfs".into(),
                sha256: SHA.into(),
                install_sha256: None,
            })
        );
        assert!(ok.network_boot());
        let payload = parse(&format!(
            "keelson.root=http://10.0.0.1/r.sqfs keelson.root_sha256={SHA} keelson.media_sha256={SHA}"
        ));
        assert_eq!(
            payload.net_root.map(|r| r.install_sha256),
            Some(Some(SHA.to_string()))
        );
        let bad = parse(&format!(
            "keelson.root=http://10.0.0.1/r.sqfs keelson.root_sha256={SHA} keelson.media_sha256=zz"
        ));
        assert!(bad
            .net_root_error
            .is_some_and(|e| e.contains("keelson.media_sha256")));
        assert!(ok.warnings.is_empty(), "no slot warning: {:?}", ok.warnings);

        let with_hash = |root: &str| format!("{root} keelson.root_sha256={SHA}");
        for (line, says) in [
            (
                "keelson.root=http://10.0.0.1/r.sqfs".to_string(),
                "needs keelson.root_sha256",
            ),
            (
                "keelson.root=http://10.0.0.1/r.sqfs keelson.root_sha256=abc".to_string(),
                "not 64 hex digits",
            ),
            (with_hash("keelson.root=https://h/r.sqfs"), "only http://"),
            (with_hash("keelson.root=http:///r.sqfs"), "no host"),
            (with_hash("keelson.root=http://h:99999/r"), "port"),
            (with_hash("keelson.root=http://h"), "no path"),
            (with_hash("keelson.root=http://h/"), "no path"),
            (with_hash("keelson.root"), "only http://"),
            (
                with_hash("keelson.root=http://boot.example/r"),
                "IP address",
            ),
        ] {
            let c = parse(&line);
            assert!(c.network_boot(), "{line}");
            assert_eq!(c.net_root, None, "{line}");
            let err = c.net_root_error.unwrap_or_default();
            assert!(err.contains(says), "{line}: {err}");
            assert!(
                err.contains("keelson.root"),
                "{line}: names the parameter: {err}"
            );
        }
    }

    #[test]
    fn a_config_url_is_taken_when_valid_and_warned_about_when_not() {
        let ok = parse("keelson.slot=A keelson.config=http://10.0.2.100/node.yaml");
        assert_eq!(
            ok.config_url.as_deref(),
            Some("http://10.0.2.100/node.yaml")
        );
        let bad = parse("keelson.slot=A keelson.config=ftp://x/node.yaml");
        assert_eq!(bad.config_url, None);
        assert!(
            bad.warnings[0].contains("keelson.config"),
            "{:?}",
            bad.warnings
        );
        // A host name would fail every fetch (no resolver): said at once.
        let named = parse("keelson.slot=A keelson.config=http://boot.example/node.yaml");
        assert_eq!(named.config_url, None);
        assert!(
            named.warnings[0].contains("IP address"),
            "{:?}",
            named.warnings
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any command line parses (the kernel hands over arbitrary
            /// bytes); a network root is only ever taken with a valid hash.
            #[test]
            fn any_line_parses_and_a_taken_root_is_well_formed(line in "\\PC{0,200}") {
                let c = parse(&line);
                if let Some(r) = &c.net_root {
                    prop_assert!(r.url.starts_with("http://"));
                    prop_assert_eq!(r.sha256.len(), 64);
                    prop_assert!(c.net_root_error.is_none());
                }
            }

            /// Every well-formed root is taken exactly as given, whatever
            /// surrounds it.
            #[test]
            fn well_formed_roots_are_taken(
                ip in any::<[u8; 4]>(),
                port in 1u16..,
                path in "[a-z0-9._-]{1,20}(/[a-z0-9._-]{1,20}){0,3}",
                sha in "[0-9a-f]{64}",
                before in "( [a-z]{1,8}=[a-z0-9]{0,8}){0,3}",
            ) {
                let url = format!("http://{}.{}.{}.{}:{port}/{path}", ip[0], ip[1], ip[2], ip[3]);
                let line = format!("{before} keelson.root={url} keelson.root_sha256={sha}");
                let c = parse(&line);
                prop_assert!(c.network_boot());
                prop_assert_eq!(c.net_root, Some(NetRoot { url, sha256: sha, install_sha256: None }));
            }
        }
    }
}
