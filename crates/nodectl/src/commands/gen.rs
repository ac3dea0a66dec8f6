//! `nodectl gen secrets`, `gen config` and `gen drain-role`: a cluster's key
//! material, a node's commented starting config, and the Kubernetes role a
//! node drains itself with.
//!
//! `gen config` validates what it generated with the machine-config crate
//! before printing it: when the flags make an invalid config (a bad
//! `--name`, a gateway outside the addresses' networks...), it prints every
//! problem and exits 1, and prints no config.

use std::net::IpAddr;
use std::path::Path;

use machine_config::Cidr;

use crate::cli::{GenCommand, GenConfigArgs, GenDrainRoleArgs, GenSecretsArgs};
use crate::commands::{emit, CliError, Status};
use crate::files;
use crate::output::{render_machine, OutputFormat, Table};
use crate::secrets_dir::{self, SecretsDirError};
use crate::starting_config::{EmbeddedSecrets, KubeJoin, StartingConfig};

/// Runs a `gen` subcommand.
pub fn run(cmd: GenCommand, format: OutputFormat) -> Result<Status, CliError> {
    match cmd {
        GenCommand::Secrets(args) => secrets(&args, format),
        GenCommand::Config(args) => config(&args),
        GenCommand::DrainRole(args) => drain_role(&args),
    }
}

fn drain_role(args: &GenDrainRoleArgs) -> Result<Status, CliError> {
    print!(
        "{}",
        crate::drain_role::render(&crate::drain_role::DrainRole {
            name: args.name.clone(),
            namespace: args.namespace.clone(),
            nodes: args.nodes.clone(),
        })
    );
    Ok(Status::Success)
}

impl From<SecretsDirError> for CliError {
    fn from(e: SecretsDirError) -> Self {
        match e {
            SecretsDirError::Secrets(e) => CliError::Secrets(e),
            SecretsDirError::Write(e) => CliError::Write(e),
            SecretsDirError::Contexts(e) => CliError::Contexts(e),
            SecretsDirError::Read { path, source } => CliError::Read { path, source },
            SecretsDirError::Invalid { path, message } => {
                CliError::Usage(format!("{}: {message}", path.display()))
            }
        }
    }
}

fn secrets(args: &GenSecretsArgs, format: OutputFormat) -> Result<Status, CliError> {
    for ep in &args.endpoint {
        crate::contexts::endpoint_with_port(ep)
            .map_err(|reason| CliError::Usage(format!("--endpoint {ep:?} {reason}")))?;
    }
    let written = secrets_dir::generate(&args.out, &args.endpoint, args.force)?;
    if let Some(text) = render_machine(format, &written)? {
        return emit(&text).map(|()| Status::Success);
    }
    let mut table = Table::new(["FILE", "MODE", "CONTENT"]);
    for f in &written {
        table.row([
            f.path.display().to_string(),
            f.mode.clone(),
            f.content.clone(),
        ]);
    }
    let contexts = args.out.join(secrets_dir::CONTEXTS);
    emit(&format!(
        "{table}\nNext: `nodectl gen config --name NODE --secrets {dir} > node.yaml`,\n\
         and `export NODECTL_CONTEXTS={contexts}` to reach nodes as admin.\n",
        dir = args.out.display(),
        contexts = contexts.display(),
    ))?;
    Ok(Status::Success)
}

/// `--address` values split into every IP (for certificate names) and the
/// ones with a prefix (static addresses).
fn split_addresses(addresses: &[String]) -> Result<(Vec<IpAddr>, Vec<Cidr>), CliError> {
    let mut ips = Vec::new();
    let mut cidrs = Vec::new();
    for a in addresses {
        if a.contains('/') {
            let cidr: Cidr = a
                .parse()
                .map_err(|e| CliError::Usage(format!("--address {a:?}: {e}")))?;
            ips.push(cidr.addr);
            cidrs.push(cidr);
        } else {
            let ip: IpAddr = a.parse().map_err(|_| {
                CliError::Usage(format!("--address {a:?} is not an IP address or IP/PREFIX"))
            })?;
            ips.push(ip);
        }
    }
    Ok((ips, cidrs))
}

fn config(args: &GenConfigArgs) -> Result<Status, CliError> {
    let (ips, static_addresses) = split_addresses(&args.addresses)?;
    if args.gateway.is_some() && static_addresses.is_empty() {
        return Err(CliError::Usage(
            "--gateway needs at least one --address IP/PREFIX (a static address)".into(),
        ));
    }
    let kubernetes = match (&args.api_server, &args.kube_ca, &args.token) {
        (Some(url), Some(ca), Some(token)) => Some(KubeJoin {
            api_server: url.clone(),
            ca_pem: std::fs::read_to_string(ca).map_err(|source| CliError::Read {
                path: ca.clone(),
                source,
            })?,
            token: token.clone(),
        }),
        _ => None,
    };
    let mut starting = StartingConfig {
        name: args.name.clone(),
        static_addresses,
        gateway: args.gateway,
        interface: args.interface.clone(),
        kubernetes,
        secrets: None,
        generated_on: time::OffsetDateTime::now_utc().date().to_string(),
    };

    // Validate before issuing a certificate: a bad name is reported as a
    // config problem, and nothing is signed for it.
    if check(&starting.render(), false)? == Status::Invalid {
        return Ok(Status::Invalid);
    }
    if let Some(dir) = &args.secrets {
        starting.secrets = Some(embed_secrets(dir, &args.name, &ips, &args.sans)?);
    }
    let text = starting.render();
    if check(&text, true)? == Status::Invalid {
        return Ok(Status::Invalid);
    }
    match &args.out {
        Some(path) => {
            files::write_file(path, text.as_bytes(), files::SECRET_MODE, args.force)?;
            eprintln!("wrote {} (mode 0600)", path.display());
        }
        None => emit(&text)?,
    }
    Ok(Status::Success)
}

/// Issues the node certificate from the secrets in `dir`.
fn embed_secrets(
    dir: &Path,
    name: &str,
    ips: &[IpAddr],
    sans: &[String],
) -> Result<EmbeddedSecrets, CliError> {
    let node = secrets_dir::load_node_secrets(dir)?;
    let mut extra: Vec<String> = ips.iter().map(ToString::to_string).collect();
    extra.extend(sans.iter().cloned());
    let issued = node.ca.issue_node(&node.template, name, &extra)?;
    let mut cert_names = vec![name.to_owned(), "localhost".into(), "127.0.0.1".into()];
    for n in extra.iter().chain(&node.template.alt_names) {
        if !cert_names.contains(n) {
            cert_names.push(n.clone());
        }
    }
    let expires = time::OffsetDateTime::now_utc()
        + time::Duration::days(i64::from(node.template.validity_days));
    tracing::info!(node = name, names = ?cert_names, "issued node certificate");
    Ok(EmbeddedSecrets {
        ca_pem: node.ca.cert_pem().to_owned(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        cert_names,
        cert_expires: expires.date().to_string(),
        upgrade_public_key: node.upgrade_public_key,
    })
}

/// Parses and validates generated YAML; prints its errors (and warnings
/// when `print_warnings`) to standard error.
fn check(text: &str, print_warnings: bool) -> Result<Status, CliError> {
    let what = "the generated config";
    let doc = match machine_config::parse(text.as_bytes()) {
        Ok(doc) => doc,
        Err(e) => {
            // Every flag value is quoted, so a parse error is our bug.
            return Err(CliError::Internal(format!("{what} does not parse: {e}")));
        }
    };
    let report = doc.validate();
    for p in &report.errors {
        eprintln!("{what}: {p}");
    }
    if print_warnings {
        for p in &report.warnings {
            eprintln!("{what}: warning: {p}");
        }
    }
    if report.is_ok() {
        Ok(Status::Success)
    } else {
        eprintln!("{what} is invalid: fix the flags above and run again");
        Ok(Status::Invalid)
    }
}
