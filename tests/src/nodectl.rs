//! The operator's side of a scenario: a PKI made by `nodectl gen secrets`,
//! the node certificates for a config (`nodectl gen config --secrets`),
//! contexts files per identity, and the real static `nodectl` binary run
//! against a node's forwarded API port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use machine_config::schema::Certificates;

use crate::artifacts::{self, MissingArtifact};

/// Setting up the operator failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// nodectl is not built.
    #[error(transparent)]
    Missing(#[from] MissingArtifact),
    /// A nodectl command failed.
    #[error("nodectl {args}: {detail}")]
    Nodectl {
        /// The arguments.
        args: String,
        /// Exit status and output.
        detail: String,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One nodectl run: exit code, stdout, stderr.
pub struct Run {
    /// Exit code (-1 when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A secrets directory and the nodectl binary.
#[derive(Debug)]
pub struct Operator {
    /// The static nodectl of the image build.
    pub bin: PathBuf,
    /// The secrets directory (`ca.crt`, `admin.crt`, ...).
    pub secrets: PathBuf,
}

impl Operator {
    /// Makes a fresh PKI in `dir` with `nodectl gen secrets`.
    pub fn new(dir: &Path) -> Result<Operator, OperatorError> {
        let bin = artifacts::node_binary("nodectl")?;
        let op = Operator {
            bin,
            secrets: dir.to_path_buf(),
        };
        let out = dir.display().to_string();
        op.must(&["gen", "secrets", "--out", &out])?;
        Ok(op)
    }

    fn must(&self, args: &[&str]) -> Result<Vec<u8>, OperatorError> {
        let out =
            Command::new(&self.bin)
                .args(args)
                .output()
                .map_err(|e| OperatorError::Nodectl {
                    args: args.join(" "),
                    detail: e.to_string(),
                })?;
        if !out.status.success() {
            return Err(OperatorError::Nodectl {
                args: args.join(" "),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(out.stdout)
    }

    /// The `machine.certificates` of a node named `node`, issued by this
    /// PKI with 127.0.0.1 as a SAN (the forwarded port is reached there).
    pub fn node_certificates(&self, node: &str) -> Result<Certificates, OperatorError> {
        let secrets = self.secrets.display().to_string();
        let args = [
            "gen",
            "config",
            "--name",
            node,
            "--san",
            "127.0.0.1",
            "--secrets",
            &secrets,
        ];
        let yaml = self.must(&args)?;
        let detail = |d: String| OperatorError::Nodectl {
            args: args.join(" "),
            detail: d,
        };
        machine_config::load(&yaml)
            .map_err(|e| detail(e.to_string()))?
            .config
            .machine
            .certificates
            .ok_or_else(|| detail("no machine.certificates in the generated config".into()))
    }

    /// A contexts file `dir/<name>.yaml` for client `who` (`admin`,
    /// `operator`, `reader`) of this PKI, talking to `endpoint`.
    pub fn contexts(
        &self,
        dir: &Path,
        name: &str,
        who: &str,
        endpoint: &str,
    ) -> Result<PathBuf, OperatorError> {
        let path = dir.join(format!("{name}.yaml"));
        let s = self.secrets.display();
        let text = format!(
            "current: {name}\ncontexts:\n  {name}:\n    endpoints: [\"{endpoint}\"]\n    ca: {s}/ca.crt\n    cert: {s}/{who}.crt\n    key: {s}/{who}.key\n"
        );
        std::fs::write(&path, text).map_err(|source| OperatorError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// nodectl pointed at one node.
#[derive(Debug)]
pub struct Nodectl {
    /// The binary.
    pub bin: PathBuf,
    /// `host:port` of the node's API.
    pub endpoint: String,
}

impl Nodectl {
    /// The command `nodectl [--contexts C] -n ENDPOINT ARGS...`, not yet
    /// started (for a run that goes on in the background).
    pub fn command(&self, contexts: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        if let Some(c) = contexts {
            cmd.arg("--contexts").arg(c);
        }
        cmd.args(["-n", &self.endpoint]);
        cmd.args(args);
        cmd.env_remove("NODECTL_CONTEXTS");
        cmd
    }

    /// Runs `nodectl [--contexts C] -n ENDPOINT ARGS...`.
    pub fn run(&self, contexts: Option<&Path>, args: &[&str]) -> Run {
        let run = match self.command(contexts, args).output() {
            Ok(out) => Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => Run {
                code: -1,
                stdout: String::new(),
                stderr: format!("running {}: {e}", self.bin.display()),
            },
        };
        eprintln!("$ nodectl {} -> exit {}", args.join(" "), run.code);
        run
    }

    /// Writes `config` to `file` and applies it live: `apply-config -f
    /// FILE --mode no-reboot`. Errors only when the file cannot be made;
    /// the run says how nodectl fared.
    pub fn apply_live(
        &self,
        contexts: &Path,
        config: &machine_config::MachineConfig,
        file: &Path,
    ) -> std::io::Result<Run> {
        let yaml = machine_config::to_yaml(config).map_err(std::io::Error::other)?;
        std::fs::write(file, yaml)?;
        let file_s = file.display().to_string();
        Ok(self.run(
            Some(contexts),
            &["apply-config", "-f", &file_s, "--mode", "no-reboot"],
        ))
    }

    /// Runs and returns stdout; panics with the whole run on failure.
    pub fn ok(&self, contexts: &Path, args: &[&str]) -> String {
        let r = self.run(Some(contexts), args);
        assert!(r.code == 0, "nodectl {args:?} failed: {r:?}");
        r.stdout
    }

    /// Retries until it succeeds, up to `timeout`; panics after.
    pub fn eventually(&self, contexts: &Path, args: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.run(Some(contexts), args);
            if r.code == 0 {
                return r.stdout;
            }
            assert!(
                Instant::now() < deadline,
                "nodectl {args:?} kept failing for {timeout:?}: {r:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Parses JSON output, panicking with the text when it is not JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Every string anywhere in a JSON value, joined by spaces: to look for a
/// commit id or a state without depending on the layout of the output.
pub fn strings(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(strings).collect::<Vec<_>>().join(" "),
        serde_json::Value::Object(o) => o.values().map(strings).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}
