//! How results are printed: `-o table` (human text, the default), `-o json`
//! (pretty JSON) or `-o yaml`. Commands build a serialisable value for the
//! machine formats and their own lines (or a [`Table`]) for humans.

use std::fmt;

use serde::Serialize;

/// The output format chosen with `-o/--output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text and aligned columns.
    #[default]
    Table,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Why a value could not be printed in a machine format.
#[derive(Debug, thiserror::Error)]
#[error("cannot render output as {format}: {message}")]
pub struct OutputError {
    /// `json` or `yaml`.
    pub format: &'static str,
    /// The serialiser's message.
    pub message: String,
}

/// `value` as pretty JSON (with a final newline).
pub fn to_json<T: Serialize>(value: &T) -> Result<String, OutputError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| OutputError {
            format: "json",
            message: e.to_string(),
        })
}

/// `value` as YAML.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, OutputError> {
    serde_saphyr::to_string(value).map_err(|e| OutputError {
        format: "yaml",
        message: e.to_string(),
    })
}

/// `value` in a machine format; `None` for [`OutputFormat::Table`], which
/// each command renders itself.
pub fn render_machine<T: Serialize>(
    format: OutputFormat,
    value: &T,
) -> Result<Option<String>, OutputError> {
    match format {
        OutputFormat::Table => Ok(None),
        OutputFormat::Json => to_json(value).map(Some),
        OutputFormat::Yaml => to_yaml(value).map(Some),
    }
}

/// A table with a header row and left-aligned columns separated by two
/// spaces; the last column is not padded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(headers: I) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra cells are kept).
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == columns {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(f, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["ACTION", "CHANGE"]);
        t.row(["live", "sysctl a.b.c: 1 -> 2"]);
        t.row(["reboot", "kernel args"]);
        assert_eq!(
            t.to_string(),
            "ACTION  CHANGE\nlive    sysctl a.b.c: 1 -> 2\nreboot  kernel args\n"
        );
    }
}
