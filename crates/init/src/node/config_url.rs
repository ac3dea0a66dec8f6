//! The first config from the network (`keelson.config=URL` on the kernel
//! command line): a node in maintenance mode fetches it over HTTP once it
//! has an address and applies it as if an operator had sent it through the
//! maintenance API. Failures (no server, an invalid config) are console
//! lines and retries with backoff; the maintenance API stays open, and a
//! config applied through it ends the retries.

use std::time::Duration;

use super::{ApplyMode, ApplyRequest, NodeCtl};
use crate::console;
use crate::netroot::fetch;

/// The largest config accepted.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// First pause after a failed attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Fetches `url` and applies it, retrying until a config is in effect.
pub async fn apply_from(node: NodeCtl, url: String) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    while node.maintenance() {
        attempt += 1;
        let outcome = match fetch::fetch_bytes(&url, MAX_CONFIG_BYTES).await {
            Err(e) => Err(e.to_string()),
            Ok(bytes) => node
                .apply_config(ApplyRequest {
                    bytes,
                    source: crate::config_store::Source {
                        file: url.clone(),
                        ..Default::default()
                    },
                    mode: ApplyMode::Auto,
                    try_timeout: Duration::ZERO,
                    dry_run: false,
                    applied_by: "keelson.config".into(),
                })
                .await
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(done) => {
                console::marker(&format!(
                    "config from keelson.config applied url={url} generation={} outcome={:?}",
                    done.generation, done.outcome
                ));
                return;
            }
            // An operator's config may have come first.
            Err(_) if !node.maintenance() => return,
            Err(e) => {
                console::marker(&format!(
                    "config from keelson.config failed attempt={attempt} error={e:?} retry_in_s={}",
                    backoff.as_secs()
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
