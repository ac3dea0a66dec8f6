//! Talking to nodes: which nodes and with which TLS configuration
//! ([`Targets`], from the contexts file and the connection flags), calling
//! them in parallel ([`fan_out`]), and printing per-node results and errors
//! ([`report`], [`LinePrinter`]).
//!
//! Exit status of a remote command: 0 when every node answered; 1 when a
//! node refused or failed the call (a gRPC status, printed as
//! `NODE: CODE: message`); 2 when a node could not be reached (connection,
//! TLS handshake, timeout) or the flags are wrong. Several nodes: the worst.

pub mod connect;

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use api::v1::machine_client::MachineClient;
use rustls::ClientConfig;
use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::ConnectArgs;
use crate::commands::{emit, CliError, Status};
use crate::contexts::{self, LoadedContexts};
use crate::output::{render_machine, OutputFormat};
use connect::{ConnectError, Fingerprint};

/// The nodes a command calls and how.
#[derive(Clone)]
pub struct Targets {
    /// `host:port` of each node, in the order given.
    pub endpoints: Vec<String>,
    /// The TLS client configuration.
    pub tls: Arc<ClientConfig>,
    /// Connect timeout per node.
    pub timeout: Duration,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Targets {
    /// Whether more than one node is called (results are then labelled).
    pub fn several(&self) -> bool {
        self.endpoints.len() > 1
    }
}

/// The nodes and TLS configuration the connection flags and the contexts
/// file describe. `--insecure` needs no contexts file when `-n` is given.
pub fn targets(args: &ConnectArgs) -> Result<Targets, CliError> {
    let nodes = args
        .nodes
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            contexts::endpoint_with_port(n)
                .map_err(|reason| CliError::Usage(format!("--nodes {n:?} {reason}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = args
        .connect_timeout
        .unwrap_or(connect::DEFAULT_CONNECT_TIMEOUT);
    if !args.insecure && args.fingerprint.is_some() {
        return Err(CliError::Usage(
            "--fingerprint pins a maintenance-mode node's certificate: it needs --insecure".into(),
        ));
    }
    let load = || -> Result<LoadedContexts, CliError> {
        let path = contexts::default_path(args.contexts.as_deref()).ok_or_else(|| {
            CliError::Usage(
                "no contexts file: pass --contexts FILE or set NODECTL_CONTEXTS (HOME is not set)"
                    .into(),
            )
        })?;
        Ok(LoadedContexts::load(&path)?)
    };
    if args.insecure {
        let pin = args
            .fingerprint
            .as_deref()
            .map(Fingerprint::parse)
            .transpose()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        if pin.is_none() {
            eprintln!(
                "nodectl: warning: --insecure without --fingerprint: the node's certificate is not \
                 checked; anyone on the path can impersonate the node"
            );
        }
        let endpoints = if nodes.is_empty() {
            let loaded = load()
                .map_err(|e| CliError::Usage(format!("--insecure without -n/--nodes: {e}")))?;
            context_endpoints(&loaded, args.context.as_deref())?
        } else {
            nodes
        };
        let tls = connect::insecure_config(pin).map_err(|e| CliError::Usage(e.to_string()))?;
        return Ok(Targets {
            endpoints,
            tls,
            timeout,
        });
    }
    let loaded = load()?;
    let ctx = loaded.resolve(args.context.as_deref())?;
    let tls = connect::mutual_config(&ctx).map_err(|e| CliError::Usage(e.to_string()))?;
    let endpoints = if nodes.is_empty() {
        ctx.endpoints.clone()
    } else {
        nodes
    };
    tracing::debug!(context = %ctx.name, endpoints = ?endpoints, "targets");
    Ok(Targets {
        endpoints,
        tls,
        timeout,
    })
}

/// The endpoints of a context without reading its credentials.
fn context_endpoints(loaded: &LoadedContexts, name: Option<&str>) -> Result<Vec<String>, CliError> {
    let name = name.or(loaded.file.current.as_deref()).ok_or_else(|| {
        contexts::ContextsError::NoCurrent {
            path: loaded.path.clone(),
        }
    })?;
    let ctx =
        loaded
            .file
            .contexts
            .get(name)
            .ok_or_else(|| contexts::ContextsError::NoSuchContext {
                path: loaded.path.clone(),
                name: name.to_owned(),
                known: loaded
                    .file
                    .contexts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    ctx.endpoints
        .iter()
        .map(|ep| {
            contexts::endpoint_with_port(ep).map_err(|reason| {
                CliError::Usage(format!("context {name:?}: endpoint {ep:?} {reason}"))
            })
        })
        .collect()
}

/// Why one node's call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node could not be reached (exit 2).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The node answered with an error status (exit 1), or the connection
    /// broke during the call (exit 2).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    /// A local failure while handling the answer (exit 2).
    #[error("{0}")]
    Local(String),
}

impl NodeError {
    /// The exit status this error stands for.
    pub fn status(&self) -> Status {
        match self {
            NodeError::Connect(_) | NodeError::Local(_) => Status::Failed,
            // A status made locally by tonic from a transport failure
            // carries its cause; one the node sent does not.
            NodeError::Status(s)
                if s.code() == tonic::Code::Unavailable
                    && std::error::Error::source(s).is_some() =>
            {
                Status::Failed
            }
            NodeError::Status(_) => Status::Invalid,
        }
    }

    /// The machine-readable form for `-o json|yaml`.
    fn view(&self) -> ErrorView {
        match self {
            NodeError::Connect(e) => ErrorView {
                code: "ConnectionFailed".into(),
                message: e.to_string(),
            },
            NodeError::Status(s) => ErrorView {
                code: code_name(s.code()),
                message: s.message().to_owned(),
            },
            NodeError::Local(m) => ErrorView {
                code: "Local".into(),
                message: m.clone(),
            },
        }
    }
}

/// The gRPC code's name (`PermissionDenied`).
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

#[derive(Serialize)]
struct ErrorView {
    code: String,
    message: String,
}

/// One node's entry in `-o json|yaml` output of several nodes.
#[derive(Serialize)]
struct NodeView<'a, T: Serialize> {
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
}

/// One node's outcome.
pub type NodeResult<T> = (String, Result<T, NodeError>);

/// Connects to every target in parallel and runs `call` on each; the
/// results in the order of the endpoints.
pub async fn fan_out<T, F, Fut>(targets: &Targets, call: F) -> Vec<NodeResult<T>>
where
    F: Fn(String, MachineClient<Channel>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, NodeError>> + Send + 'static,
    T: Send + 'static,
{
    let mut handles = Vec::new();
    for endpoint in &targets.endpoints {
        let endpoint = endpoint.clone();
        let tls = targets.tls.clone();
        let timeout = targets.timeout;
        let call = call.clone();
        handles.push((
            endpoint.clone(),
            tokio::spawn(async move {
                let client = connect::connect(&endpoint, tls, timeout).await?;
                call(endpoint, client).await
            }),
        ));
    }
    let mut results = Vec::new();
    for (endpoint, handle) in handles {
        let result = match handle.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Local(format!("the call task failed: {e}"))),
        };
        if let Err(e) = &result {
            tracing::debug!(endpoint = %endpoint, error = %e, "node call failed");
        }
        results.push((endpoint, result));
    }
    results
}

/// Prints every error as `NODE: error` on standard error; returns the
/// worst status.
pub fn report_errors<T>(results: &[NodeResult<T>]) -> Status {
    let mut status = Status::Success;
    for (node, r) in results {
        if let Err(e) = r {
            eprintln!("{node}: {e}");
            status = status.worst(e.status());
        }
    }
    status
}

/// Prints per-node results: with one node its table text (`table`) or the
/// value as JSON/YAML; with several, each line prefixed `NODE: ` or a list
/// of `{node, result | error}`. Errors go to standard error as
/// `NODE: CODE: message`.
pub fn report<T: Serialize>(
    format: OutputFormat,
    targets: &Targets,
    results: &[NodeResult<T>],
    table: impl Fn(&T) -> String,
) -> Result<Status, CliError> {
    let status = report_errors(results);
    if targets.several() {
        let views: Vec<NodeView<'_, T>> = results
            .iter()
            .map(|(node, r)| NodeView {
                node,
                result: r.as_ref().ok(),
                error: r.as_ref().err().map(NodeError::view),
            })
            .collect();
        match render_machine(format, &views)? {
            Some(text) => emit(&text)?,
            None => {
                let mut out = String::new();
                for (node, r) in results {
                    if let Ok(v) = r {
                        out.push_str(&prefix_lines(node, &table(v)));
                    }
                }
                emit(&out)?;
            }
        }
    } else {
        for (_, r) in results {
            if let Ok(v) = r {
                match render_machine(format, v)? {
                    Some(text) => emit(&text)?,
                    None => emit(&table(v))?,
                }
            }
        }
    }
    Ok(status)
}

/// Every line of `text` prefixed with `NODE: `.
pub fn prefix_lines(node: &str, text: &str) -> String {
    text.lines().map(|l| format!("{node}: {l}\n")).collect()
}

/// Prints lines of streams (logs, dmesg, events) as they arrive, each as
/// one write, prefixed with the node when several are followed.
#[derive(Clone, Debug)]
pub struct LinePrinter {
    prefix: Option<String>,
}

impl LinePrinter {
    /// A printer for `node`'s lines; the prefix only when `several`.
    pub fn new(node: &str, several: bool) -> LinePrinter {
        LinePrinter {
            prefix: several.then(|| format!("{node}: ")),
        }
    }

    /// Writes one line (a newline is added). An error means standard
    /// output is gone (e.g. a closed pipe): stop streaming.
    pub fn line(&self, text: &str) -> Result<(), NodeError> {
        let mut buf = String::with_capacity(text.len() + 32);
        if let Some(p) = &self.prefix {
            buf.push_str(p);
        }
        buf.push_str(text.strip_suffix('\n').unwrap_or(text));
        buf.push('\n');
        let mut out = std::io::stdout().lock();
        out.write_all(buf.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| NodeError::Local(format!("cannot write to standard output: {e}")))
    }
}

/// Runs `fut` on a fresh tokio runtime (nodectl is otherwise synchronous).
pub fn block_on<F: Future>(fut: F) -> Result<F::Output, CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Internal(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(fut))
}
