//! The command line: clap types for every `nodectl` command, flag and
//! argument. No behaviour lives here; `commands` runs what these describe.

use std::net::IpAddr;
use std::path::PathBuf;

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

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, compare and describe machine configs (offline).
    #[command(subcommand)]
    Config(ConfigCommand),
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
