//! The contexts file: which nodes `nodectl` talks to and with which
//! credentials, in the manner of a kubeconfig.
//!
//! # Format
//!
//! ```yaml
//! # The context used when none is named on the command line.
//! current: admin
//! contexts:
//!   admin:
//!     # host[:port] of each node's API (apid); the port defaults to 50000.
//!     endpoints: ["127.0.0.1:50000"]
//!     # The CA that signed the nodes' certificates, then this client's
//!     # certificate and key. Each is either a path or inline PEM text
//!     # (a value that contains "-----BEGIN"). A relative path is resolved
//!     # against the directory holding this file, not the working directory.
//!     ca: ca.crt
//!     cert: admin.crt
//!     key: admin.key
//! ```
//!
//! Unknown fields are refused. `current`, when present, must name a context,
//! and every context needs at least one endpoint.
//!
//! # Where it is
//!
//! `--contexts FILE` when given, else `$NODECTL_CONTEXTS`, else
//! `$HOME/.config/keelson/nodectl.yaml` ([`default_path`]). The file holds a
//! private key (or the path to one): it is written mode 0600.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::files;

/// The port apid listens on unless a node's config says otherwise.
pub const DEFAULT_API_PORT: u16 = 50000;
/// The environment variable naming the contexts file.
pub const CONTEXTS_ENV: &str = "NODECTL_CONTEXTS";

/// Why a contexts file could not be read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum ContextsError {
    /// The file could not be read.
    #[error("cannot read contexts file {}: {source}", .path.display())]
    Read {
        /// The contexts file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid contexts file.
    #[error("contexts file {}: {message}", .path.display())]
    Invalid {
        /// The contexts file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A context was asked for that the file does not have.
    #[error("contexts file {}: no context named {name:?} (it has: {known})", .path.display())]
    NoSuchContext {
        /// The contexts file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names it has, comma-separated.
        known: String,
    },
    /// No context was named and the file has no `current`.
    #[error("contexts file {}: no context named and no `current` set", .path.display())]
    NoCurrent {
        /// The contexts file.
        path: PathBuf,
    },
    /// A PEM file a context refers to could not be read.
    #[error("context {context:?}: cannot read {field} file {}: {source}", .path.display())]
    ReadPem {
        /// The context.
        context: String,
        /// `ca`, `cert` or `key`.
        field: &'static str,
        /// The resolved path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] files::WriteError),
    /// Serialising the file failed.
    #[error("cannot serialise contexts file: {0}")]
    Serialize(String),
}

/// A whole contexts file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContextsFile {
    /// The context used when none is named. Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The contexts by name. Default: none.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One context: a set of nodes and the credentials to reach them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Context {
    /// `host[:port]` of each node's API; the port defaults to
    /// [`DEFAULT_API_PORT`]. At least one.
    pub endpoints: Vec<String>,
    /// The CA that signs the nodes' API certificates.
    pub ca: PemSource,
    /// This client's certificate (its Organization is its role).
    pub cert: PemSource,
    /// This client's private key.
    pub key: PemSource,
}

/// Where a PEM value comes from: inline text, or a file. In YAML it is one
/// string; a string containing `-----BEGIN` is inline PEM, anything else is
/// a path (relative paths are relative to the contexts file's directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemSource {
    /// The PEM text itself.
    Inline(String),
    /// A path to a PEM file, as written in the file.
    File(PathBuf),
}

impl PemSource {
    /// Classifies a string as in the file format.
    pub fn from_text(text: &str) -> PemSource {
        if text.contains("-----BEGIN") {
            PemSource::Inline(text.to_owned())
        } else {
            PemSource::File(PathBuf::from(text))
        }
    }

    /// The PEM text: inline, or read from the file (a relative path is
    /// resolved against `base_dir`).
    fn read(
        &self,
        base_dir: &Path,
        context: &str,
        field: &'static str,
    ) -> Result<String, ContextsError> {
        match self {
            PemSource::Inline(text) => Ok(text.clone()),
            PemSource::File(path) => {
                let full = base_dir.join(path);
                fs::read_to_string(&full).map_err(|source| ContextsError::ReadPem {
                    context: context.to_owned(),
                    field,
                    path: full,
                    source,
                })
            }
        }
    }
}

impl Serialize for PemSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PemSource::Inline(text) => s.serialize_str(text),
            PemSource::File(path) => s.collect_str(&path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for PemSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Err(serde::de::Error::custom(
                "expected a path or inline PEM text, found an empty string",
            ));
        }
        Ok(PemSource::from_text(&text))
    }
}

/// A context ready to connect with: endpoints with ports, PEM texts read.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedContext {
    /// The context's name.
    pub name: String,
    /// `host:port` of each node (the default port filled in).
    pub endpoints: Vec<String>,
    /// PEM of the CA that signs node certificates.
    pub ca_pem: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM of the client private key.
    pub key_pem: String,
}

impl std::fmt::Debug for ResolvedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("ResolvedContext")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A contexts file together with where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedContexts {
    /// The file's path.
    pub path: PathBuf,
    /// Its content.
    pub file: ContextsFile,
}

/// The contexts file to use: `explicit` when given, else
/// `$NODECTL_CONTEXTS`, else `$HOME/.config/keelson/nodectl.yaml`. `None`
/// when none applies (no `HOME`).
pub fn default_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(CONTEXTS_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".config/keelson/nodectl.yaml"))
}

impl ContextsFile {
    /// Parses and checks a contexts file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ContextsFile, ContextsError> {
        let file: ContextsFile =
            serde_saphyr::from_str(text).map_err(|e| ContextsError::Invalid {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        file.check(path)?;
        Ok(file)
    }

    fn check(&self, path: &Path) -> Result<(), ContextsError> {
        let invalid = |message: String| ContextsError::Invalid {
            path: path.to_owned(),
            message,
        };
        if let Some(current) = &self.current {
            if !self.contexts.contains_key(current) {
                return Err(invalid(format!(
                    "current: {current:?} is not one of the contexts ({})",
                    self.known_names()
                )));
            }
        }
        for (name, ctx) in &self.contexts {
            if ctx.endpoints.is_empty() {
                return Err(invalid(format!(
                    "contexts.{name}.endpoints: at least one endpoint is needed"
                )));
            }
            for (i, ep) in ctx.endpoints.iter().enumerate() {
                if let Err(reason) = endpoint_with_port(ep) {
                    return Err(invalid(format!(
                        "contexts.{name}.endpoints[{i}]: {ep:?} {reason}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn known_names(&self) -> String {
        if self.contexts.is_empty() {
            "none".into()
        } else {
            self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// The file as YAML, as [`ContextsFile::save`] writes it.
    pub fn to_yaml(&self) -> Result<String, ContextsError> {
        serde_saphyr::to_string(self).map_err(|e| ContextsError::Serialize(e.to_string()))
    }

    /// Writes the file at `path`, mode 0600, atomically; refuses to replace
    /// an existing file unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), ContextsError> {
        let text = self.to_yaml()?;
        files::write_file(path, text.as_bytes(), files::SECRET_MODE, force)?;
        Ok(())
    }
}

impl LoadedContexts {
    /// Reads and checks the contexts file at `path`.
    pub fn load(path: &Path) -> Result<LoadedContexts, ContextsError> {
        let text = fs::read_to_string(path).map_err(|source| ContextsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(LoadedContexts {
            path: path.to_owned(),
            file: ContextsFile::parse(&text, path)?,
        })
    }

    /// The context named `name`, else the file's `current`, with its PEM
    /// files read (relative to the contexts file's directory) and default
    /// ports filled in.
    pub fn resolve(&self, name: Option<&str>) -> Result<ResolvedContext, ContextsError> {
        let name = match name.or(self.file.current.as_deref()) {
            Some(n) => n,
            None => {
                return Err(ContextsError::NoCurrent {
                    path: self.path.clone(),
                })
            }
        };
        let ctx = self
            .file
            .contexts
            .get(name)
            .ok_or_else(|| ContextsError::NoSuchContext {
                path: self.path.clone(),
                name: name.to_owned(),
                known: self.file.known_names(),
            })?;
        let base = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let endpoints = ctx
            .endpoints
            .iter()
            .map(|ep| {
                endpoint_with_port(ep).map_err(|reason| ContextsError::Invalid {
                    path: self.path.clone(),
                    message: format!("contexts.{name}.endpoints: {ep:?} {reason}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResolvedContext {
            name: name.to_owned(),
            endpoints,
            ca_pem: ctx.ca.read(&base, name, "ca")?,
            cert_pem: ctx.cert.read(&base, name, "cert")?,
            key_pem: ctx.key.read(&base, name, "key")?,
        })
    }
}

/// `host[:port]` with the default port added when absent. IPv6 addresses
/// are written in brackets (`[fd00::1]:50000`); a bare IPv6 address is
/// accepted and bracketed.
pub fn endpoint_with_port(endpoint: &str) -> Result<String, &'static str> {
    let ep = endpoint.trim();
    if ep.is_empty() {
        return Err("is empty: expected host[:port]");
    }
    if ep.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{ep}]:{DEFAULT_API_PORT}"));
    }
    let (host, port) = if let Some(rest) = ep.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("has an unclosed '[': expected [IPv6]:port");
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has brackets around something that is not an IPv6 address");
        }
        match after.strip_prefix(':') {
            Some(port) => (format!("[{host}]"), Some(port)),
            None if after.is_empty() => (format!("[{host}]"), None),
            None => return Err("has text after ']' that is not :port"),
        }
    } else {
        match ep.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (ep.to_owned(), None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err("has no valid host: expected host[:port]");
    }
    match port {
        None => Ok(format!("{host}:{DEFAULT_API_PORT}")),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(format!("{host}:{n}")),
            _ => Err("has a port that is not a number in 1..=65535"),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn endpoints_get_the_default_port() {
        assert_eq!(endpoint_with_port("node1").unwrap(), "node1:50000");
        assert_eq!(
            endpoint_with_port("10.0.0.5:6000").unwrap(),
            "10.0.0.5:6000"
        );
        assert_eq!(endpoint_with_port("fd00::1").unwrap(), "[fd00::1]:50000");
        assert_eq!(endpoint_with_port("[fd00::1]:7").unwrap(), "[fd00::1]:7");
        assert!(endpoint_with_port("node1:99999").is_err());
        assert!(endpoint_with_port("node1:").is_err());
        assert!(endpoint_with_port("").is_err());
        assert!(endpoint_with_port("[nothex]:1").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_file_and_inline_pem_stays() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.crt"), "CA PEM").unwrap();
        fs::write(dir.path().join("admin.key"), "KEY PEM").unwrap();
        let text = "current: admin\ncontexts:\n  admin:\n    endpoints: [\"127.0.0.1\"]\n    ca: ca.crt\n    cert: |\n      -----BEGIN CERTIFICATE-----\n      abc\n      -----END CERTIFICATE-----\n    key: admin.key\n";
        let path = dir.path().join("nodectl.yaml");
        fs::write(&path, text).unwrap();
        let loaded = LoadedContexts::load(&path).unwrap();
        let ctx = loaded.resolve(None).unwrap();
        assert_eq!(ctx.name, "admin");
        assert_eq!(ctx.endpoints, ["127.0.0.1:50000"]);
        assert_eq!(ctx.ca_pem, "CA PEM");
        assert_eq!(ctx.key_pem, "KEY PEM");
        assert!(ctx.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));

        // A round trip through save keeps the value; the file is 0600.
        let out = dir.path().join("copy.yaml");
        loaded.file.save(&out, false).unwrap();
        let again = LoadedContexts::load(&out).unwrap();
        assert_eq!(again.file, loaded.file);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            loaded.file.save(&out, false),
            Err(ContextsError::Write(files::WriteError::Exists(_)))
        ));
    }

    #[test]
    fn bad_files_are_refused_with_where() {
        let p = Path::new("x.yaml");
        let e = ContextsFile::parse("current: nope\ncontexts: {}\n", p).unwrap_err();
        assert!(
            e.to_string()
                .contains("current: \"nope\" is not one of the contexts"),
            "{e}"
        );
        let e = ContextsFile::parse(
            "contexts:\n  a:\n    endpoints: []\n    ca: c\n    cert: c\n    key: k\n",
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("contexts.a.endpoints"), "{e}");
        let e = ContextsFile::parse("contexts: {}\nbogus: 1\n", p).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let loaded = LoadedContexts {
            path: p.to_owned(),
            file: ContextsFile::default(),
        };
        assert!(matches!(
            loaded.resolve(None),
            Err(ContextsError::NoCurrent { .. })
        ));
        assert!(matches!(
            loaded.resolve(Some("x")),
            Err(ContextsError::NoSuchContext { .. })
        ));
    }
}
