//! `nodectl context list|use`: the contexts of the contexts file and which
//! one is current. `use` rewrites the file (mode 0600, atomically).

use serde::Serialize;

use crate::cli::{ConnectArgs, ContextCommand};
use crate::commands::{emit, CliError, Status};
use crate::contexts::{self, ContextsError, LoadedContexts};
use crate::output::{render_machine, OutputFormat, Table};

/// Runs a `context` subcommand.
pub fn run(
    cmd: &ContextCommand,
    connect: &ConnectArgs,
    format: OutputFormat,
) -> Result<Status, CliError> {
    let path = contexts::default_path(connect.contexts.as_deref()).ok_or_else(|| {
        CliError::Usage(
            "no contexts file: pass --contexts FILE or set NODECTL_CONTEXTS (HOME is not set)"
                .into(),
        )
    })?;
    let mut loaded = LoadedContexts::load(&path)?;
    match cmd {
        ContextCommand::List => list(&loaded, format),
        ContextCommand::Use { name } => {
            if !loaded.file.contexts.contains_key(name) {
                return Err(ContextsError::NoSuchContext {
                    path: loaded.path.clone(),
                    name: name.clone(),
                    known: loaded
                        .file
                        .contexts
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into());
            }
            loaded.file.current = Some(name.clone());
            loaded.file.save(&loaded.path, true)?;
            tracing::info!(context = %name, file = %loaded.path.display(), "current context set");
            emit(&format!(
                "current context: {name} ({})\n",
                loaded.path.display()
            ))?;
            Ok(Status::Success)
        }
    }
}

#[derive(Serialize)]
struct ContextView<'a> {
    name: &'a str,
    current: bool,
    endpoints: &'a [String],
}

fn list(loaded: &LoadedContexts, format: OutputFormat) -> Result<Status, CliError> {
    let current = loaded.file.current.as_deref();
    let views: Vec<ContextView<'_>> = loaded
        .file
        .contexts
        .iter()
        .map(|(name, ctx)| ContextView {
            name,
            current: Some(name.as_str()) == current,
            endpoints: &ctx.endpoints,
        })
        .collect();
    if let Some(text) = render_machine(format, &views)? {
        emit(&text)?;
        return Ok(Status::Success);
    }
    let mut t = Table::new(["CURRENT", "NAME", "ENDPOINTS"]);
    for v in &views {
        t.row([
            if v.current { "*" } else { "" }.to_owned(),
            v.name.to_owned(),
            v.endpoints.join(","),
        ]);
    }
    emit(&t.to_string())?;
    Ok(Status::Success)
}
