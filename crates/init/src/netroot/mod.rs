//! Stage 1's network root (`keelson.root=URL keelson.root_sha256=HEX`):
//! DHCP on every Ethernet interface, the squashfs fetched over HTTP into
//! RAM and checked against the command line's SHA-256, then attached to a
//! read-only loop device for stage 1 to mount like a slot. Every failure
//! (no link, no lease, no server, a wrong hash) is a console line and a
//! retry with backoff: a node being network-booted waits for its server,
//! it does not reboot in a loop. The leases are given back before the
//! switch: stage 2 configures the network from the config (or DHCP in
//! maintenance mode) from a clean slate.

pub mod fetch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cmdline::NetRoot;
use crate::console;
use crate::network;

/// Where the fetched squashfs lives: the initramfs' own RAM filesystem
/// (the loop device keeps it after stage 1 frees the initramfs).
const ROOT_FILE: &str = "/rootfs.squashfs";
/// First pause after a failed attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one attempt waits for a DHCP lease.
const DHCP_WAIT: Duration = Duration::from_secs(20);

/// What the network boot did, kept in the boot state (and shown by
/// `nodectl health`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetRootRecord {
    /// Where the root came from.
    pub url: String,
    /// Its SHA-256, as checked.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// Attempts it took (1: the first one worked).
    pub attempts: u32,
    /// The loop device it is mounted from.
    pub device: String,
    /// Whether the install payload (`media.json` and the EFI partition's
    /// files beside the root) was fetched: the node can install.
    #[serde(default)]
    pub install_payload: bool,
}

/// Why an attempt failed (printed, then retried).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// No Ethernet interface exists.
    #[error("no Ethernet interface (is the NIC's driver in the initramfs?)")]
    NoInterface,
    /// The network could not be configured at all.
    #[error("network: {0}")]
    Network(#[from] network::NetworkError),
    /// No interface got a lease.
    #[error("no DHCP lease on {0}")]
    NoLease(String),
    /// The fetch failed.
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    /// The loop device could not be set up.
    #[error("loop device: {0}")]
    Loop(#[from] crate::loopdev::LoopError),
}

/// Fetches and attaches the root, retrying until it works; `progress` is
/// called whenever something moved (the watchdog counts it). Returns the
/// loop device to mount and the record, or an error only if stage 1 cannot
/// even run the async runtime it needs.
pub fn bring_up(
    root: &NetRoot,
    progress: &(dyn Fn() + Sync),
) -> Result<(PathBuf, NetRootRecord), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime for the network root: {e}"))?;
    Ok(runtime.block_on(retry_until_fetched(root, progress)))
}

async fn retry_until_fetched(
    root: &NetRoot,
    progress: &(dyn Fn() + Sync),
) -> (PathBuf, NetRootRecord) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        progress();
        let started = Instant::now();
        match one_attempt(root, progress).await {
            Ok((device, bytes, install_payload)) => {
                console::marker(&format!(
                    "netboot root ok url={} bytes={bytes} sha256={} attempt={attempt} took_ms={} device={}",
                    root.url,
                    root.sha256,
                    started.elapsed().as_millis(),
                    device.display()
                ));
                let record = NetRootRecord {
                    url: root.url.clone(),
                    sha256: root.sha256.clone(),
                    bytes,
                    attempts: attempt,
                    device: device.display().to_string(),
                    install_payload,
                };
                return (device, record);
            }
            Err(e) => {
                console::marker(&format!(
                    "netboot root failed attempt={attempt} error=\"{e}\" retry_in_s={}",
                    backoff.as_secs()
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Network up, fetch, check, attach; the leases are given back whatever
/// happened.
async fn one_attempt(
    root: &NetRoot,
    progress: &(dyn Fn() + Sync),
) -> Result<(PathBuf, u64, bool), AttemptError> {
    let names = network::ethernet_interfaces(Path::new("/sys/class/net"));
    if names.is_empty() {
        return Err(AttemptError::NoInterface);
    }
    let net = network::dhcp_on(&names);
    let timing = network::Timing {
        dhcp_boot: DHCP_WAIT,
        ..Default::default()
    };
    let state = network::apply_with(&net, &timing).await?;
    let result = match state.first_address() {
        None => Err(AttemptError::NoLease(names.join(", "))),
        Some(ip) => {
            console::marker(&format!("netboot address={ip} fetching {}", root.url));
            let mut shown = |received: u64, total: Option<u64>| {
                progress();
                let total = total.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
                console::marker(&format!("netboot root received={received} total={total}"));
            };
            let fetched = fetch::fetch(&root.url, Path::new(ROOT_FILE), &root.sha256, &mut shown)
                .await
                .map_err(AttemptError::from);
            // The install payload: its absence costs the ability to
            // install, not the boot.
            let payload = match (&fetched, &root.install_sha256) {
                (Ok(_), Some(sha)) => match fetch_payload(&root.url, sha).await {
                    Ok(files) => {
                        console::marker(&format!("netboot install payload ok files={files}"));
                        true
                    }
                    Err(e) => {
                        console::marker(&format!(
                            "netboot install payload missing error=\"{e}\": this node can run but not install"
                        ));
                        false
                    }
                },
                _ => false,
            };
            fetched.map(|bytes| (bytes, payload))
        }
    };
    network::release(&state).await;
    let (bytes, payload) = match result {
        Ok(r) => r,
        Err(e) => {
            // Free the RAM a wrong or partial root took.
            let _ = std::fs::remove_file(ROOT_FILE);
            return Err(e);
        }
    };
    let device = crate::loopdev::attach_read_only(Path::new(ROOT_FILE))?;
    Ok((device, bytes, payload))
}

/// Largest `media.json` fetched.
const MANIFEST_LIMIT: u64 = 1024 * 1024;

/// Fetches the install payload beside the root (`media.json`, checked
/// against `manifest_sha256`, then every ESP file it lists, each checked by
/// its hash and size) into stage 1's payload directory; returns the number
/// of files.
async fn fetch_payload(root_url: &str, manifest_sha256: &str) -> Result<usize, String> {
    use sha2::{Digest as _, Sha256};
    let base = root_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(root_url);
    let url = format!("{base}/{}", crate::media::PAYLOAD_MANIFEST);
    let bytes = fetch::fetch_bytes(&url, MANIFEST_LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != manifest_sha256 {
        return Err(format!(
            "{url}: SHA-256 {actual}, but keelson.media_sha256 is {manifest_sha256}"
        ));
    }
    let m = crate::media::manifest::parse(&bytes).map_err(|e| e.to_string())?;
    let dir = crate::media::payload_dir()?;
    for f in &m.esp {
        let to = crate::media::payload_esp_file(&dir, &f.path)?;
        let url = format!("{base}/esp/{}", f.path);
        let got = fetch::fetch(&url, &to, &f.sha256, &mut |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
        if got != f.size {
            return Err(format!("{url}: {got} bytes, media.json says {}", f.size));
        }
    }
    let to = dir.join(crate::media::PAYLOAD_MANIFEST);
    std::fs::write(&to, &bytes).map_err(|e| format!("write {}: {e}", to.display()))?;
    Ok(m.esp.len())
}
