//! `nodectl config validate | plan | schema`: offline work on machine
//! configs, with the machine-config crate doing the parsing, validation and
//! planning.
//!
//! Decisions:
//! - A file that cannot be read (missing, no permission, a directory) is an
//!   I/O error: exit 2, the reason on standard error, and the other files
//!   are still validated and reported.
//! - Bytes that are read but are not UTF-8, not YAML, or not a machine
//!   config are an invalid config: exit 1, with the location the parser
//!   gives.
//! - `-` reads standard input (once).
//! - `config plan --first NEW` plans a first config on a fresh node (no
//!   previous config); `-` is standard input, not "no config".

use std::path::Path;

use machine_config::{Document, ParseError, Problem};
use serde::Serialize;

use crate::cli::{ConfigCommand, PlanArgs, ValidateArgs};
use crate::commands::{check_stdin_once, emit, read_input, CliError, Status};
use crate::output::{render_machine, OutputFormat};

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand, format: OutputFormat) -> Result<Status, CliError> {
    match cmd {
        ConfigCommand::Validate(args) => validate(&args, format),
        ConfigCommand::Plan(args) => plan(&args, format),
        ConfigCommand::Schema => schema(format),
        // Dispatched to the remote commands by `commands::run`.
        ConfigCommand::Confirm | ConfigCommand::History | ConfigCommand::Rollback(_) => Err(
            CliError::Internal("config confirm/history/rollback reached the offline runner".into()),
        ),
    }
}

/// One problem as printed in JSON/YAML output.
#[derive(Clone, Debug, Serialize)]
struct ProblemView {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    message: String,
    /// The same as the table line: `PATH: line L col C: MESSAGE`.
    text: String,
}

impl From<&Problem> for ProblemView {
    fn from(p: &Problem) -> Self {
        ProblemView {
            path: p.path.clone(),
            line: p.location.map(|l| l.line),
            column: p.location.map(|l| l.column),
            message: p.message.clone(),
            text: p.to_string(),
        }
    }
}

impl From<&ParseError> for ProblemView {
    fn from(e: &ParseError) -> Self {
        ProblemView {
            path: e.path.clone(),
            line: e.location.map(|l| l.line),
            column: e.location.map(|l| l.column),
            message: e.message.clone(),
            text: e.to_string(),
        }
    }
}

/// Where a config was read from in git.
#[derive(Clone, Debug, Serialize)]
struct GitSourceView {
    repo: String,
    #[serde(rename = "ref")]
    git_ref: String,
    path: String,
    commit: String,
}

/// The verdict on one input.
#[derive(Clone, Debug, Serialize)]
struct FileVerdict {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    git: Option<GitSourceView>,
    /// `valid`, `invalid` or `unreadable`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_error: Option<String>,
    errors: Vec<ProblemView>,
    warnings: Vec<ProblemView>,
}

impl FileVerdict {
    fn status(&self) -> Status {
        match self.status {
            "valid" => Status::Success,
            "invalid" => Status::Invalid,
            _ => Status::Failed,
        }
    }

    /// Table lines: every error, every warning, then the verdict.
    fn lines(&self) -> String {
        let mut out = String::new();
        if let Some(g) = &self.git {
            out.push_str(&format!(
                "read {}@{}:{} (commit {})\n",
                g.repo, g.git_ref, g.path, g.commit
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("{}: {}\n", self.file, e.text));
        }
        for w in &self.warnings {
            out.push_str(&format!("{}: warning: {}\n", self.file, w.text));
        }
        let counts = match (self.errors.len(), self.warnings.len()) {
            (0, 0) => String::new(),
            (e, 0) => format!(" ({})", plural(e, "error")),
            (0, w) => format!(" ({})", plural(w, "warning")),
            (e, w) => format!(" ({}, {})", plural(e, "error"), plural(w, "warning")),
        };
        match &self.read_error {
            Some(err) => out.push_str(&format!("{}: unreadable: {err}\n", self.file)),
            None => out.push_str(&format!("{}: {}{counts}\n", self.file, self.status)),
        }
        out
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The outcome of parsing and validating bytes.
enum Checked {
    /// Parsed and validated (the report may hold errors).
    Document(Box<Document>, machine_config::Report),
    /// Did not parse.
    Unparsable(ParseError),
}

fn check_bytes(bytes: &[u8]) -> Checked {
    match machine_config::parse(bytes) {
        Ok(doc) => {
            let report = doc.validate();
            Checked::Document(Box::new(doc), report)
        }
        Err(e) => Checked::Unparsable(e),
    }
}

fn verdict(file: String, checked: &Checked) -> FileVerdict {
    let (errors, warnings): (Vec<ProblemView>, Vec<ProblemView>) = match checked {
        Checked::Document(_, report) => (
            report.errors.iter().map(ProblemView::from).collect(),
            report.warnings.iter().map(ProblemView::from).collect(),
        ),
        Checked::Unparsable(e) => (vec![ProblemView::from(e)], Vec::new()),
    };
    FileVerdict {
        file,
        git: None,
        status: if errors.is_empty() {
            "valid"
        } else {
            "invalid"
        },
        read_error: None,
        errors,
        warnings,
    }
}

fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

fn validate(args: &ValidateArgs, format: OutputFormat) -> Result<Status, CliError> {
    let mut verdicts = Vec::new();
    if let Some(repo) = &args.git {
        let Some(path) = &args.path else {
            return Err(CliError::Usage("--git needs --path".into()));
        };
        verdicts.push(validate_git(repo, &args.git_ref, path)?);
    } else {
        check_stdin_once(&args.files)?;
        for path in &args.files {
            let name = display_name(path);
            match read_input(path) {
                Ok(bytes) => verdicts.push(verdict(name, &check_bytes(&bytes))),
                Err(err) => {
                    eprintln!("nodectl: error: {err}");
                    let reason = match &err {
                        CliError::Read { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    verdicts.push(FileVerdict {
                        file: name,
                        git: None,
                        status: "unreadable",
                        read_error: Some(reason),
                        errors: Vec::new(),
                        warnings: Vec::new(),
                    });
                }
            }
        }
    }
    let status = verdicts
        .iter()
        .fold(Status::Success, |s, v| s.worst(v.status()));
    match render_machine(format, &verdicts)? {
        Some(text) => emit(&text)?,
        None => emit(&verdicts.iter().map(FileVerdict::lines).collect::<String>())?,
    }
    Ok(status)
}

fn validate_git(repo: &Path, git_ref: &str, path: &str) -> Result<FileVerdict, CliError> {
    let (bytes, source) = machine_config::git::read_at_ref(repo, git_ref, path)?;
    tracing::info!(repo = %repo.display(), git_ref, path, commit = %source.commit, "read config from git");
    let label = format!("{}@{}:{}", repo.display(), git_ref, path);
    let mut v = verdict(label, &check_bytes(&bytes));
    v.git = Some(GitSourceView {
        repo: source.repo.clone(),
        git_ref: source.git_ref.clone(),
        path: source.path.clone(),
        commit: source.commit.clone(),
    });
    Ok(v)
}

fn schema(format: OutputFormat) -> Result<Status, CliError> {
    let schema = machine_config::json_schema::json_schema();
    let text = match format {
        OutputFormat::Yaml => crate::output::to_yaml(&schema)?,
        OutputFormat::Table | OutputFormat::Json => crate::output::to_json(&schema)?,
    };
    emit(&text)?;
    Ok(Status::Success)
}

/// Reads and checks one side of a plan; prints its problems to standard
/// error. `None` when it is invalid.
fn load_for_plan(path: &Path) -> Result<Option<machine_config::MachineConfig>, CliError> {
    let name = display_name(path);
    let bytes = read_input(path)?;
    Ok(check_printing(&name, &bytes))
}

/// Parses and validates `bytes`, printing every problem (and warning) to
/// standard error as `NAME: problem`, then a verdict line if invalid.
/// `None` when the config is invalid.
pub fn check_printing(name: &str, bytes: &[u8]) -> Option<machine_config::MachineConfig> {
    match check_bytes(bytes) {
        Checked::Unparsable(e) => {
            eprintln!("{name}: {e}");
            eprintln!("{name}: invalid (1 error)");
            None
        }
        Checked::Document(doc, report) => {
            for e in &report.errors {
                eprintln!("{name}: {e}");
            }
            for w in &report.warnings {
                eprintln!("{name}: warning: {w}");
            }
            if report.is_ok() {
                Some(doc.config)
            } else {
                eprintln!("{name}: invalid ({})", plural(report.errors.len(), "error"));
                None
            }
        }
    }
}

fn plan(args: &PlanArgs, format: OutputFormat) -> Result<Status, CliError> {
    let (old_path, new_path) = match (args.first, args.files.as_slice()) {
        (true, [new]) => (None, new),
        (false, [old, new]) => (Some(old), new),
        (true, _) => {
            return Err(CliError::Usage(
                "with --first give only NEW (there is no OLD config)".into(),
            ))
        }
        (false, _) => {
            return Err(CliError::Usage(
                "give OLD and NEW, or --first NEW for a node's first config".into(),
            ))
        }
    };
    check_stdin_once(&args.files)?;
    let old = match old_path {
        Some(p) => match load_for_plan(p)? {
            Some(cfg) => Some(cfg),
            None => return Ok(Status::Invalid),
        },
        None => None,
    };
    let Some(new) = load_for_plan(new_path)? else {
        return Ok(Status::Invalid);
    };
    let plan = machine_config::plan::plan(old.as_ref(), &new);
    let view = PlanView {
        needs_reboot: plan.needs_reboot(),
        changes: &plan.changes,
    };
    if let Some(text) = render_machine(format, &view)? {
        emit(&text)?;
        return Ok(Status::Success);
    }
    let mut text = plan.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&plan_summary(&plan));
    emit(&text)?;
    Ok(Status::Success)
}

/// A plan as printed in JSON/YAML output.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanView<'a> {
    needs_reboot: bool,
    changes: &'a [machine_config::plan::Change],
}

fn plan_summary(plan: &machine_config::plan::Plan) -> String {
    let n = plan.changes.len();
    if n == 0 {
        return "no changes\n".into();
    }
    let reboot = plan
        .changes
        .iter()
        .filter(|c| c.apply == machine_config::plan::Apply::Reboot)
        .count();
    if reboot > 0 {
        format!(
            "{} ({} live, {reboot} at the next boot): a reboot is needed\n",
            plural(n, "change"),
            n - reboot
        )
    } else {
        format!("{}, all live: no reboot needed\n", plural(n, "change"))
    }
}
