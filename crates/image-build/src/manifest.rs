//! The version manifest (`version.json`): what the image is made of, so a
//! node (and its operator) can tell which kubelet, kernel and packages it
//! runs. The copy in the root tree lacks `artifacts` (it cannot describe the
//! image that contains it); `out/version.json` has them.

use serde::Serialize;

use crate::debs::Pinned;

/// Where the kubelet came from.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum KubeletSource {
    /// Built from Debian's kubernetes source package.
    DebianSource {
        /// Debian source version.
        version: String,
        /// SHA-256 of the .orig tarball.
        orig_sha256: String,
        /// SHA-256 of the kubelet binary.
        sha256: String,
    },
    /// `--kubelet PATH`.
    UserSupplied {
        /// The path given.
        path: String,
        /// SHA-256 of the binary.
        sha256: String,
    },
}

/// Size and digest of one output.
#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256.
    pub sha256: String,
}

/// The manifest.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    /// Image version (`--version`).
    pub version: String,
    /// SHA-256 of every input (packages, binaries, config, seed, epoch).
    pub build_id: String,
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub kernel: String,
    /// Kubelet origin.
    pub kubelet: KubeletSource,
    /// Debian packages the image was made from.
    pub packages: Vec<Pinned>,
    /// Preloaded images (file names under /usr/share/keelson/images).
    pub images: Vec<String>,
    /// Whether a config was baked into STATE.
    pub config_baked: bool,
    /// SOURCE_DATE_EPOCH used for every timestamp.
    pub source_date_epoch: u64,
    /// Seed of every UUID.
    pub seed: String,
    /// Sizes and digests of the outputs (only in `out/version.json`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}
