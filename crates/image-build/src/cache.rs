//! The build cache outside the clone (`$KEELSON_CACHE`, default
//! `~/.cache/keelson`): downloaded .debs, unpacked package trees, the
//! Kubernetes build and Go's build cache.

use std::path::PathBuf;

/// Root of the cache: `$KEELSON_CACHE`, else `$HOME/.cache/keelson`.
pub fn root() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KEELSON_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("neither KEELSON_CACHE nor HOME is set: cannot place the build cache")
        })?;
    Ok(PathBuf::from(home).join(".cache/keelson"))
}
