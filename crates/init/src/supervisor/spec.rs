//! What a caller asks the supervisor to run: [`ServiceSpec`], its
//! [`RestartPolicy`] and its [`Readiness`] check.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::error::SupervisorError;

/// A boxed readiness probe: resolves to `Ok(())` when the service is ready,
/// `Err(why)` when it is not ready *yet* (it is called again).
pub type ReadinessProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How the supervisor decides a started service is Running.
#[derive(Clone, Default)]
pub enum Readiness {
    /// Running as soon as it is started.
    #[default]
    None,
    /// Running once a connection to this unix socket is accepted.
    UnixSocket(PathBuf),
    /// Running once this probe returns `Ok` (e.g. a CRI `Version` call).
    /// Each attempt is bounded by what is left of the readiness timeout.
    Custom(ReadinessProbe),
}

impl Readiness {
    /// Wraps an async closure as a [`Readiness::Custom`] probe.
    pub fn custom<F, Fut>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Readiness::Custom(Arc::new(move || Box::pin(probe())))
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::None => f.write_str("None"),
            Readiness::UnixSocket(path) => f.debug_tuple("UnixSocket").field(path).finish(),
            Readiness::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Restart with exponential backoff: the first restart waits
/// `backoff_initial`, each further one twice as long up to `backoff_max`.
/// A run that lasted at least `reset_after` resets the delay to
/// `backoff_initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub backoff_initial: Duration,
    /// Cap of the delay; also the retry period of a service that cannot be
    /// spawned at all (Failed).
    pub backoff_max: Duration,
    /// A run at least this long counts as stable and resets the delay.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    /// 1 s doubling to 30 s, reset after 60 s of stable running.
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// A long-running service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Unique name; also the log file name (`<log_dir>/<name>.log`), so it
    /// may only hold ASCII letters, digits, `-`, `_` and `.` (not leading).
    pub name: String,
    /// Program and arguments; the program should be an absolute path
    /// (PATH lookup uses `env`'s PATH if given, else init's own).
    pub argv: Vec<String>,
    /// The complete environment: nothing is inherited from PID 1.
    pub env: Vec<(String, String)>,
    /// Working directory; `/` when `None`.
    pub cwd: Option<PathBuf>,
    /// When the service counts as Running.
    pub readiness: Readiness,
    /// Not ready within this long: the process is stopped and restarted
    /// (with backoff). Default 60 s.
    pub readiness_timeout: Duration,
    /// Backoff between restarts.
    pub restart: RestartPolicy,
    /// How long a stop waits after SIGTERM before SIGKILL. Default 10 s.
    pub stop_timeout: Duration,
}

impl ServiceSpec {
    /// A spec with the defaults: empty environment, cwd `/`, no readiness
    /// check, 60 s readiness timeout, default restart policy, 10 s stop
    /// timeout.
    pub fn new(name: impl Into<String>, argv: Vec<String>) -> Self {
        Self {
            name: name.into(),
            argv,
            env: Vec::new(),
            cwd: None,
            readiness: Readiness::None,
            readiness_timeout: Duration::from_secs(60),
            restart: RestartPolicy::default(),
            stop_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the name, argv and policy; the error names the service and
    /// the field.
    pub fn validate(&self) -> Result<(), SupervisorError> {
        let bad = |field: &'static str, problem: String| SupervisorError::InvalidSpec {
            name: self.name.clone(),
            field,
            problem,
        };
        validate_name(&self.name).map_err(|problem| bad("name", problem))?;
        match self.argv.first() {
            None => return Err(bad("argv", "is empty".into())),
            Some(program) if program.is_empty() => {
                return Err(bad("argv[0]", "is an empty program name".into()))
            }
            Some(_) => {}
        }
        if let Some((key, _)) = self
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(bad("env", format!("invalid variable name {key:?}")));
        }
        if self.restart.backoff_initial.is_zero()
            || self.restart.backoff_max < self.restart.backoff_initial
        {
            return Err(bad(
                "restart",
                format!(
                    "backoff_initial ({:?}) must be > 0 and <= backoff_max ({:?})",
                    self.restart.backoff_initial, self.restart.backoff_max
                ),
            ));
        }
        Ok(())
    }
}

/// Service names become file names: keep them boring.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters"));
    }
    if name.starts_with('.') {
        return Err(format!("{name:?} must not start with '.'"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "{name:?} holds {c:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rejects_unsafe_names_and_empty_argv_naming_the_field() {
        let ok = ServiceSpec::new("containerd", vec!["/usr/bin/containerd".into()]);
        assert!(ok.validate().is_ok());
        for name in ["", "../etc", "a/b", ".hidden", "sp ace"] {
            let spec = ServiceSpec::new(name, vec!["/bin/true".into()]);
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains("name"), "{name:?}: {err}");
        }
        let err = ServiceSpec::new("x", vec![])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("argv is empty"), "{err}");
        let mut spec = ServiceSpec::new("x", vec!["/bin/true".into()]);
        spec.restart.backoff_max = Duration::from_millis(1);
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("restart"), "{err}");
    }
}
