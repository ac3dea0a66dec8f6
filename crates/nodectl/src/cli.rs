//! The command line: clap types for every `nodectl` command, flag and
//! argument. No behaviour lives here; `commands` runs what these describe.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::output::OutputFormat;

/// The operator's CLI for Keelson nodes.
///
/// Exit codes: 0 success; 1 the input is invalid (or a node refused);
/// 2 usage, I/O or connection error.
#[derive(Debug, Parser)]
#[command(name = "nodectl", version, about, long_about = None)]
pub struct Cli {
    /// Output format of commands that print results.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// How to reach nodes (commands that talk to a node's API).
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the nodes are and how to authenticate: global flags of the
/// commands that call a node's API.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// The contexts file (default: $NODECTL_CONTEXTS, else
    /// ~/.config/keelson/nodectl.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub contexts: Option<PathBuf>,

    /// The context to use instead of the file's `current`.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The nodes to call (`host[:port]`, comma-separated or repeated; port
    /// default 50000) instead of the context's endpoints. Several nodes are
    /// called in parallel.
    #[arg(
        short = 'n',
        long = "nodes",
        global = true,
        value_delimiter = ',',
        value_name = "HOST[:PORT],..."
    )]
    pub nodes: Vec<String>,

    /// Maintenance mode: present no client certificate and do not check the
    /// node's certificate against a CA; pin it with --fingerprint.
    #[arg(long, global = true)]
    pub insecure: bool,

    /// With --insecure: the SHA-256 fingerprint the node printed on its
    /// console (hex, `sha256:` prefix and colons allowed).
    #[arg(long, global = true, value_name = "SHA256")]
    pub fingerprint: Option<String>,

    /// How long connecting to a node may take (`10s`, `1m`).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
}

/// Parses `90`, `90s`, `5m` or `1h` (whole numbers).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with an optional unit s, m or h"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?}: expected a number with an optional unit s, m or h"))?;
    Ok(Duration::from_secs(secs))
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Machine configs: validate, plan, schema (offline); confirm, history,
    /// rollback (on nodes).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the contexts of the contexts file, or choose the current one.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Validate a config locally, then apply it on the nodes.
    ApplyConfig(ApplyConfigArgs),
    /// Fetch things from nodes.
    #[command(subcommand)]
    Get(GetCommand),
    /// List the nodes' services and their state.
    Services,
    /// Start, stop, restart or signal a service.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// A service's log (the last lines; `-f` follows).
    Logs(LogsArgs),
    /// The kernel log (`-f` follows).
    Dmesg(FollowArgs),
    /// Print a file under /proc, /sys, /etc or /var/log (raw bytes).
    Read(ReadArgs),
    /// Memory, load and per-service resource use.
    Stats,
    /// The mounted filesystems.
    Mounts,
    /// OS version, slot, kernel, build id, hostname, uptime.
    Version,
    /// Service states, boot phase timings, boot problems.
    Health(HealthArgs),
    /// The event stream: boot phases, service transitions, configs applied.
    Events(EventsArgs),
    /// Reboot the nodes (the ordered sequence).
    Reboot(PowerArgs),
    /// Power the nodes off (the ordered sequence).
    Shutdown(PowerArgs),
    /// The report of the previous shutdown and this boot's filesystem
    /// findings.
    LastShutdown,
    /// Install a signed upgrade bundle into the inactive A/B slot and boot
    /// it on trial (`upgrade -f BUNDLE`); `upgrade status` shows the slots.
    Upgrade(UpgradeArgs),
    /// Boot the other A/B slot (it must hold a valid image) and make it the
    /// default. Not `config rollback`, which re-applies a config.
    Rollback(SlotRollbackArgs),
    /// Generate a starting config or a cluster's secrets.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Print a shell completion script (e.g. `nodectl completion bash >
    /// /etc/bash_completion.d/nodectl`).
    Completion(CompletionArgs),
}

/// `nodectl config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate machine configs: print every problem; exit 1 if any config
    /// is invalid, 2 if any cannot be read.
    Validate(ValidateArgs),
    /// Show what applying NEW over OLD would change, each change marked
    /// `live` or `reboot`.
    Plan(PlanArgs),
    /// Print the JSON Schema of the machine config (for editors).
    Schema,
    /// Keep a config applied with `--mode try` (on the nodes).
    Confirm,
    /// The stored config generations, newest first (on the nodes).
    History,
    /// Apply a stored generation again, as a new generation (on the nodes).
    Rollback(RollbackArgs),
}

/// `nodectl context ...`
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List the contexts (`*` marks the current one).
    List,
    /// Make NAME the current context.
    Use {
        /// The context's name.
        name: String,
    },
}

/// How a node applies a config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ApplyModeArg {
    /// Live what can be applied live; an ordered reboot only if needed.
    #[default]
    Auto,
    /// Refuse a config that needs a reboot.
    NoReboot,
    /// Apply and reboot.
    Reboot,
    /// Store it for the next boot.
    Staged,
    /// Apply live; revert unless confirmed within --timeout.
    Try,
}

/// Default confirmation window of `--mode try`.
pub const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(120);

/// `nodectl apply-config`
#[derive(Debug, Args)]
pub struct ApplyConfigArgs {
    /// The config file (`-` reads standard input).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub file: Option<PathBuf>,

    /// Read the config from this local git repository instead.
    #[arg(long, value_name = "REPO", requires = "path")]
    pub git: Option<PathBuf>,

    /// The branch, tag or commit to read (with --git).
    #[arg(
        long = "ref",
        value_name = "REF",
        requires = "git",
        default_value = "HEAD"
    )]
    pub git_ref: String,

    /// The config's path inside the repository (with --git).
    #[arg(long, value_name = "PATH", requires = "git")]
    pub path: Option<String>,

    /// How the node applies it.
    #[arg(long, value_enum, default_value_t = ApplyModeArg::Auto)]
    pub mode: ApplyModeArg,

    /// Validate and plan on the node, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// With --mode try: revert unless `config confirm` comes within this
    /// time (default 120s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// `nodectl config rollback`
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The generation to apply again (default: the previous one).
    #[arg(value_name = "GEN")]
    pub generation: Option<u64>,

    /// How the node applies it.
    #[arg(long, value_enum, default_value_t = ApplyModeArg::Auto)]
    pub mode: ApplyModeArg,

    /// With --mode try: revert unless confirmed within this time (default
    /// 120s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// `nodectl get ...`
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Print a node's machine config (YAML, as applied). Admin only: it may
    /// hold private keys.
    Config {
        /// The generation (default: the current one).
        #[arg(long, value_name = "N")]
        generation: Option<u64>,
    },
}

/// `nodectl service ...`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Restart a service.
    Restart {
        /// The service.
        name: String,
    },
    /// Stop a service.
    Stop {
        /// The service.
        name: String,
    },
    /// Start a service.
    Start {
        /// The service.
        name: String,
    },
    /// Send a signal to a service's main process (the supervisor restarts
    /// it if it exits, as after a crash).
    Kill {
        /// The service.
        name: String,
        /// A signal name (`KILL`, `SIGTERM`...) or number (default TERM).
        #[arg(short, long, value_name = "SIGNAL")]
        signal: Option<String>,
    },
}

/// `nodectl logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service.
    pub name: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Print the last N lines first (default: the node's choice).
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
}

/// `nodectl dmesg`
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Keep printing new messages.
    #[arg(short, long)]
    pub follow: bool,
}

/// `nodectl read`
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The file's absolute path.
    pub path: String,
}

/// `nodectl health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Wait until every service is running (bounded by the node).
    #[arg(long)]
    pub wait: bool,
}

/// `nodectl events`
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Replay this many past events before following.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tail: u32,
}

/// `nodectl reboot` / `nodectl shutdown`
#[derive(Debug, Args)]
pub struct PowerArgs {
    /// Skip the waits of the ordered sequence (and the drain).
    #[arg(long)]
    pub force: bool,
    /// Do not cordon and drain the node through the Kubernetes API first.
    #[arg(long, conflicts_with = "drain_timeout")]
    pub no_drain: bool,
    /// Bound of the drain for this call instead of the config's
    /// `kubernetes.drainTimeout` (`0s` disables it).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
}

/// `nodectl config validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Config files to validate; `-` reads standard input.
    #[arg(
        value_name = "FILE",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub files: Vec<PathBuf>,

    /// Validate a config stored in this local git repository instead.
    #[arg(long, value_name = "REPO", requires = "path")]
    pub git: Option<PathBuf>,

    /// The branch, tag or commit to read (with --git).
    #[arg(
        long = "ref",
        value_name = "REF",
        requires = "git",
        default_value = "HEAD"
    )]
    pub git_ref: String,

    /// The config's path inside the repository (with --git).
    #[arg(long, value_name = "PATH", requires = "git")]
    pub path: Option<String>,
}

/// `nodectl config plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// OLD then NEW config files (`-` reads standard input). With
    /// `--first`, only NEW: the plan of a first config on a fresh node.
    #[arg(value_name = "OLD NEW", num_args = 1..=2, required = true)]
    pub files: Vec<PathBuf>,

    /// There is no previous config: plan NEW as the node's first config.
    #[arg(long)]
    pub first: bool,
}

/// `nodectl gen ...`
#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Print a commented starting machine config for a node.
    Config(GenConfigArgs),
    /// Generate the API CA, client certificates (admin, operator, reader),
    /// the node certificate template, the upgrade-signing key pair and a
    /// contexts file (nodectl.yaml) into a directory.
    Secrets(GenSecretsArgs),
    /// Print the Kubernetes ServiceAccount, token Secret and ClusterRole a
    /// node drains itself with on shutdown (for `kubernetes.token`).
    DrainRole(GenDrainRoleArgs),
}

/// `nodectl gen drain-role`
#[derive(Debug, Args)]
pub struct GenDrainRoleArgs {
    /// Name of the ServiceAccount, ClusterRole and binding.
    #[arg(long, default_value = "keelson-drain")]
    pub name: String,
    /// Namespace of the ServiceAccount and its token Secret.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    /// Restrict getting and patching nodes to this node (repeatable);
    /// without it the role may cordon any node.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
}

/// `nodectl gen config`
#[derive(Debug, Args)]
pub struct GenConfigArgs {
    /// The node's hostname (also its certificate's name).
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// A secrets directory made by `nodectl gen secrets`: embed its CA, a
    /// node certificate issued now for NAME, and its upgrade public key.
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,

    /// The Kubernetes API server kubelet joins (`https://host:6443`);
    /// requires --kube-ca and --token. Without it kubelet runs standalone.
    #[arg(long, value_name = "URL", requires_all = ["kube_ca", "token"])]
    pub api_server: Option<String>,

    /// PEM file of the CA that signs the API server's certificate.
    #[arg(long, value_name = "FILE", requires = "api_server")]
    pub kube_ca: Option<PathBuf>,

    /// Token kubelet authenticates with (e.g. a bootstrap token).
    #[arg(long, value_name = "TOKEN", requires = "api_server")]
    pub token: Option<String>,

    /// A node address, `IP` or `IP/PREFIX`; repeatable. Every address is a
    /// SAN of the node certificate; addresses with a prefix are configured
    /// statically on --interface (without any, the interface uses DHCP).
    #[arg(long = "address", value_name = "IP[/PREFIX]")]
    pub addresses: Vec<String>,

    /// Default gateway for the static addresses.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<IpAddr>,

    /// The interface to configure.
    #[arg(long, value_name = "NAME", default_value = "eth0")]
    pub interface: String,

    /// An extra DNS name or IP for the node certificate; repeatable.
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,

    /// Write the config to this file (mode 0600: it may hold the node's
    /// private key) instead of standard output.
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `nodectl gen secrets`
#[derive(Debug, Args)]
pub struct GenSecretsArgs {
    /// Directory to write into (created mode 0700 if absent).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,

    /// The endpoint of the admin context in nodectl.yaml.
    #[arg(long, value_name = "HOST[:PORT]", default_value = "127.0.0.1:50000")]
    pub endpoint: Vec<String>,
}

/// `nodectl completion`
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `nodectl upgrade -f BUNDLE [--stage | --reboot=false] [--pubkey KEY]`,
/// `nodectl upgrade --url URL [--ca FILE] [--stage | --reboot=false]` or
/// `nodectl upgrade status`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UpgradeArgs {
    /// `status`: the slots and the last upgrade instead of upgrading.
    #[command(subcommand)]
    pub command: Option<UpgradeCommand>,

    /// The bundle (`image-build bundle`, `make bundle`). Several nodes are
    /// upgraded one after the other, each with its own upload.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "BUNDLE",
        required_unless_present = "url",
        conflicts_with = "url"
    )]
    pub file: Option<PathBuf>,

    /// Instead of uploading: the node downloads the bundle from this
    /// https:// URL itself (resuming after a dropped connection) and writes
    /// it as it arrives. The node's system CAs are trusted unless `--ca`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// With `--url`: trust only the CA certificate(s) in this PEM file for
    /// the download (a private mirror).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Write the slot and set the trial, but do not reboot: the trial
    /// happens at the next reboot (same as --reboot=false).
    #[arg(long, conflicts_with = "reboot")]
    pub stage: bool,

    /// Reboot into the new slot once it is written (`--reboot=false`: do
    /// not).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub reboot: bool,

    /// Check locally, before sending, that this key signed the bundle: a
    /// public key (base64 or PEM) or a file holding it or the private
    /// signing key. Without it nodectl checks the header, manifest, size and
    /// that the signature matches the key the bundle names. The node checks
    /// its own trusted keys and every payload hash either way.
    #[arg(long, value_name = "KEY|FILE", conflicts_with = "url")]
    pub pubkey: Option<String>,
}

impl UpgradeArgs {
    /// Whether the node should reboot into the new slot (not with
    /// `--stage` or `--reboot=false`).
    pub fn reboots(&self) -> bool {
        self.reboot && !self.stage
    }
}

/// `nodectl upgrade ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// The A/B slots (state, version, booted, default) and the outcome of
    /// the last upgrade.
    Status,
}

/// `nodectl rollback [--reboot=false]`
#[derive(Debug, Args)]
pub struct SlotRollbackArgs {
    /// Reboot into the other slot now (`--reboot=false`: switch the default
    /// and boot it at the next reboot).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub reboot: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nodectl").chain(args.iter().copied()))
    }

    fn upgrade(args: &[&str]) -> UpgradeArgs {
        match parse(args).unwrap().command {
            Command::Upgrade(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upgrade_takes_a_bundle_and_reboots_unless_staged() {
        let a = upgrade(&["upgrade", "-f", "v2.bundle"]);
        assert_eq!(a.file, Some(PathBuf::from("v2.bundle")));
        assert!(a.command.is_none());
        assert!(a.reboots());
        assert!(!upgrade(&["upgrade", "-f", "x", "--stage"]).reboots());
        assert!(!upgrade(&["upgrade", "--file", "x", "--reboot=false"]).reboots());
        assert!(upgrade(&["upgrade", "-f", "x", "--reboot"]).reboots());
        assert!(upgrade(&["upgrade", "-f", "x", "--reboot=true"]).reboots());
        let a = upgrade(&["-n", "a,b", "upgrade", "-f", "x", "--pubkey", "k.pub"]);
        assert_eq!(a.pubkey.as_deref(), Some("k.pub"));
        // The bundle is required; --stage and --reboot say the same thing
        // twice (or contradict): refused.
        assert!(parse(&["upgrade"]).is_err());
        assert!(parse(&["upgrade", "-f", "x", "--stage", "--reboot=true"]).is_err());
        assert!(parse(&["upgrade", "-f", "x", "--reboot=maybe"]).is_err());
    }

    #[test]
    fn upgrade_takes_a_url_instead_of_a_file_and_a_ca_only_with_it() {
        let a = upgrade(&["upgrade", "--url", "https://m/v2.bundle", "--ca", "ca.pem"]);
        assert_eq!(a.url.as_deref(), Some("https://m/v2.bundle"));
        assert_eq!(a.ca, Some(PathBuf::from("ca.pem")));
        assert!(a.file.is_none());
        assert!(!upgrade(&["upgrade", "--url", "https://m/b", "--stage"]).reboots());
        assert!(parse(&["upgrade", "--url", "https://m/b", "-f", "x"]).is_err());
        // (--ca without --url is refused by the command: clap does not
        // check `requires` on this subcommand-negating struct.)
        assert!(parse(&["upgrade", "--url", "https://m/b", "--pubkey", "k"]).is_err());
    }

    #[test]
    fn upgrade_status_is_a_subcommand_without_a_bundle() {
        let a = upgrade(&["upgrade", "status", "-o", "json"]);
        assert!(matches!(a.command, Some(UpgradeCommand::Status)));
        assert!(a.file.is_none());
        assert!(parse(&["upgrade", "status", "-f", "x"]).is_err());
    }

    #[test]
    fn rollback_is_the_slot_switch_and_config_rollback_stays() {
        match parse(&["rollback"]).unwrap().command {
            Command::Rollback(a) => assert!(a.reboot),
            other => panic!("{other:?}"),
        }
        match parse(&["rollback", "--reboot=false"]).unwrap().command {
            Command::Rollback(a) => assert!(!a.reboot),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["config", "rollback", "3"]).unwrap().command,
            Command::Config(ConfigCommand::Rollback(_))
        ));
    }
}
