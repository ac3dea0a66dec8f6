//! Parsing a machine config from YAML bytes, and writing one back.
//!
//! This module owns the boundary between untrusted bytes and
//! [`MachineConfig`]: size, encoding and resource limits, strict
//! deserialization (unknown fields, duplicate keys and extra documents are
//! errors), the `apiVersion`/`kind` check, and the index from a config path
//! (`network.interfaces[1].addresses[0]`) to the line and column where the
//! user wrote it. Every error names the YAML path, the line and column
//! reported by the YAML parser itself (`serde-saphyr`), and what was expected.
//!
//! Hostile input is bounded before and during parsing: at most
//! [`MAX_INPUT_BYTES`] of UTF-8, at most [`MAX_DEPTH`] levels of nesting,
//! [`MAX_NODES`] nodes, and a small alias budget, so alias bombs ("billion
//! laughs") are refused after a few thousand replayed events instead of
//! exhausting memory.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{DuplicateKeyPolicy, Error as YamlError, MessageFormatter};

use crate::schema::{MachineConfig, API_VERSION, KIND};

/// Largest accepted input, in bytes (4 MiB). A real node config is a few
/// kilobytes; embedded certificates and files keep it well below this.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest accepted nesting of mappings and sequences. The schema itself
/// never nests deeper than 6.
pub const MAX_DEPTH: usize = 24;
/// Most YAML nodes (scalars, mappings, sequences) in one config.
pub const MAX_NODES: usize = 400_000;
/// Most alias (`*name`) references in one config.
pub const MAX_ALIASES: usize = 1_000;
/// Most events an alias may replay in total: bounds alias bombs.
pub const MAX_REPLAYED_EVENTS: usize = 100_000;

/// A position in the YAML source, both 1-based, column counted in
/// characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number (in characters), starting at 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} col {}", self.line, self.column)
    }
}

impl Location {
    fn from_yaml(loc: serde_saphyr::Location) -> Option<Location> {
        let line = usize::try_from(loc.line()).ok()?;
        let column = usize::try_from(loc.column()).ok()?;
        // serde-saphyr reports line 0 for "unknown location".
        (line > 0).then_some(Location {
            line,
            column: column.max(1),
        })
    }

    /// The location of byte `offset` in `bytes` (lines split on `\n`,
    /// columns counted in bytes since the text may not be valid UTF-8).
    fn of_byte_offset(bytes: &[u8], offset: usize) -> Location {
        let before = &bytes[..offset.min(bytes.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        Location {
            line,
            column: before.len() - line_start + 1,
        }
    }
}

/// What kind of problem stopped parsing (the message says the details).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    TooLarge,
    /// The input is empty or holds only whitespace.
    Empty,
    /// The input is not valid UTF-8.
    NotUtf8,
    /// The YAML itself is malformed.
    Syntax,
    /// A resource limit was hit: nesting depth, node count, aliases.
    Limit,
    /// More than one YAML document in the input.
    MultipleDocuments,
    /// The same mapping key appears twice.
    DuplicateKey,
    /// A field that the schema does not know.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A value of the wrong type or with invalid syntax (CIDR, duration...).
    InvalidValue,
    /// `apiVersion` or `kind` is not the one this crate reads.
    WrongVersion,
}

/// Why bytes are not a machine config: the YAML path, the parser's line and
/// column, and what was expected. Displays as `PATH: line L col C: MESSAGE`
/// (the path or location is left out when there is none, e.g. for an
/// oversized input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Dotted/indexed path of the offending value (`network.interfaces[1]`);
    /// empty for the document as a whole.
    pub path: String,
    /// Where in the source, when known.
    pub location: Option<Location>,
    /// The class of problem.
    pub kind: ParseErrorKind,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            self.path.as_str()
        };
        match self.location {
            Some(loc) => write!(f, "{path}: {loc}: {}", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Why a config could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the machine config as YAML: {0}")]
pub struct WriteError(#[from] serde_saphyr::SerializeError);

/// Source locations of one YAML node: its value and, for a mapping entry,
/// its key.
#[derive(Clone, Copy, Debug)]
struct NodeLocation {
    value: Location,
    key: Option<Location>,
}

/// A parsed config together with where each of its values was written.
#[derive(Clone, Debug)]
pub struct Document {
    /// The config itself.
    pub config: MachineConfig,
    locations: HashMap<String, NodeLocation>,
}

impl Document {
    /// Where the value at `path` was written, e.g.
    /// `network.interfaces[1].addresses[0]` or `machine.sysctls.vm.swappiness`
    /// (map keys are appended verbatim after a dot). `None` when the value
    /// was not written (a default) or came from an alias or merge key.
    pub fn location_of(&self, path: &str) -> Option<Location> {
        self.locations.get(path).map(|n| n.value)
    }

    /// Where the mapping key of the entry at `path` was written (e.g. the
    /// sysctl name of `machine.sysctls.vm.swappiness`). Falls back to the
    /// value's location for sequence items.
    pub fn key_location_of(&self, path: &str) -> Option<Location> {
        self.locations.get(path).map(|n| n.key.unwrap_or(n.value))
    }
}

/// Parses and type-checks a machine config. Does not run the semantic
/// checks of [`crate::validate`]; call [`Document::validate`] for those (or
/// use [`crate::load`], which does both).
pub fn parse(bytes: &[u8]) -> Result<Document, ParseError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ParseError {
            path: String::new(),
            location: None,
            kind: ParseErrorKind::TooLarge,
            message: format!(
                "the config is {} bytes; the limit is {} bytes (4 MiB)",
                bytes.len(),
                MAX_INPUT_BYTES
            ),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        ParseError {
            path: String::new(),
            location: Some(Location::of_byte_offset(bytes, offset)),
            kind: ParseErrorKind::NotUtf8,
            message: format!("invalid UTF-8 at byte offset {offset}: a config must be UTF-8 text"),
        }
    })?;
    let only_comments = text
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'));
    if only_comments {
        return Err(ParseError {
            path: String::new(),
            location: None,
            kind: ParseErrorKind::Empty,
            message: format!(
                "the config is empty (or only comments): expected a mapping with apiVersion: {API_VERSION}, \
                 kind: {KIND} and machine"
            ),
        });
    }

    let mut error_path: Option<String> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, MachineConfig>(de).map_err(|e| {
            error_path = Some(yaml_path(e.path()));
            e.into_inner()
        })
    });
    let config = match result {
        Ok(cfg) => cfg,
        Err(e) => return Err(convert_error(&e, error_path.unwrap_or_default())),
    };

    let locations = index_locations(text);
    let doc = Document { config, locations };
    check_version(&doc)?;
    Ok(doc)
}

/// Writes a config as YAML that [`parse`] reads back to an equal value.
pub fn to_yaml(cfg: &MachineConfig) -> Result<String, WriteError> {
    Ok(serde_saphyr::to_string(cfg)?)
}

/// The parser options: strict and bounded.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: 4 * MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_documents: 2,
            max_merge_keys: MAX_ALIASES,
            max_recorded_anchor_events: MAX_REPLAYED_EVENTS,
            max_recorded_anchor_bytes: MAX_INPUT_BYTES,
            max_total_scalar_bytes: 2 * MAX_INPUT_BYTES,
            max_inclusion_depth: 0,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: MAX_ALIASES,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
        reject_unsupported_tags: true,
        emit_comments: false,
        with_snippet: false,
    }
}

/// Renders a serde_path_to_error path in this crate's path syntax: keys
/// joined by dots, sequence indices in brackets.
fn yaml_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// Turns a serde-saphyr error into ours: classified, located, and with a
/// message that says what was expected.
fn convert_error(err: &YamlError, path: String) -> ParseError {
    // Alias errors wrap the real error; snippets are off but unwrap anyway.
    let mut inner = err.without_snippet();
    let mut location = inner.location().and_then(Location::from_yaml);
    if let YamlError::AliasError { error, .. } = inner {
        inner = error.without_snippet();
        location = location.or_else(|| inner.location().and_then(Location::from_yaml));
    }
    let (kind, message) = describe(inner);
    // serde_path_to_error cannot name a key it never handed to serde (a
    // duplicate one): name it from the error instead.
    let mut path = path;
    if path == "?" || path.ends_with(".?") {
        path.truncate(path.len().saturating_sub(2));
        if let YamlError::DuplicateMappingKey { key: Some(k), .. } = inner {
            path = join(&path, k);
        }
    }
    ParseError {
        path,
        location,
        kind,
        message: sanitize(&message),
    }
}

fn describe(err: &YamlError) -> (ParseErrorKind, String) {
    use ParseErrorKind as K;
    match err {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => (
            K::UnknownField,
            format!(
                "unknown field {field:?}; allowed fields here: {}",
                if expected.is_empty() {
                    "none".to_string()
                } else {
                    expected.join(", ")
                }
            ),
        ),
        YamlError::SerdeMissingField { field, .. } => {
            (K::MissingField, format!("missing required field {field:?}"))
        }
        YamlError::DuplicateMappingKey { key, .. } => (
            K::DuplicateKey,
            match key {
                Some(k) => format!("duplicate key {k:?}: each key may appear only once"),
                None => "duplicate key: each key may appear only once".to_string(),
            },
        ),
        YamlError::MultipleDocuments { .. } => (
            K::MultipleDocuments,
            "a second YAML document (after `---`): a config file holds exactly one document"
                .to_string(),
        ),
        YamlError::Budget { breach, .. } => (K::Limit, describe_breach(breach)),
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => (
            K::Limit,
            format!(
                "aliases expand to too much data (more than {MAX_REPLAYED_EVENTS} replayed \
                 events or {MAX_ALIASES} uses of one anchor): refusing a possible alias bomb"
            ),
        ),
        YamlError::InvalidScalar { ty, .. } => (K::InvalidValue, expected_number(ty)),
        YamlError::InvalidUtf8Input => (
            K::NotUtf8,
            "invalid UTF-8: a config must be UTF-8 text".to_string(),
        ),
        YamlError::ExternalMessage { .. }
        | YamlError::Eof { .. }
        | YamlError::UnexpectedSequenceEnd { .. }
        | YamlError::UnexpectedMappingEnd { .. }
        | YamlError::ContainerEndMismatch { .. }
        | YamlError::UnknownAnchor { .. }
        | YamlError::UnsupportedTag { .. }
        | YamlError::IndentationError { .. } => {
            let msg = formatted(err);
            // The scanner's own nesting guard (flow collections) fires
            // before the budget's depth check can.
            if msg.contains("recursion limit") || msg.contains("nesting limit") {
                (
                    K::Limit,
                    describe_breach(&BudgetBreach::Depth { depth: MAX_DEPTH }),
                )
            } else {
                (K::Syntax, msg)
            }
        }
        _ => (K::InvalidValue, formatted(err)),
    }
}

fn describe_breach(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { .. } => {
            format!("nesting deeper than {MAX_DEPTH} levels: a machine config is never this deep")
        }
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
            format!("more than {MAX_NODES} YAML nodes: the config is too large")
        }
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::MergeKeys { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => format!(
            "too many anchors, aliases or merge keys (limit {MAX_ALIASES}, \
             {MAX_REPLAYED_EVENTS} replayed events): refusing a possible alias bomb"
        ),
        BudgetBreach::Documents { .. } => {
            "more than one YAML document: a config file holds exactly one document".to_string()
        }
        other => format!("the config exceeds a parser limit ({other:?})"),
    }
}

/// What a number field accepts, for a scalar that did not parse as one.
fn expected_number(ty: &str) -> String {
    let range = match ty {
        "u8" => "0 to 255",
        "u16" => "0 to 65535",
        "u32" => "0 to 4294967295",
        "u64" => "0 to 18446744073709551615",
        "i32" => "-2147483648 to 2147483647",
        "i64" => "-9223372036854775808 to 9223372036854775807",
        _ => return format!("not a valid {ty}"),
    };
    format!("expected a whole number from {range}")
}

/// serde-saphyr's own message for `err`, without its location suffix.
fn formatted(err: &YamlError) -> String {
    serde_saphyr::DefaultMessageFormatter
        .format_message(err)
        .into_owned()
}

/// Replaces control characters so a message is one printable line.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn check_version(doc: &Document) -> Result<(), ParseError> {
    let cfg = &doc.config;
    if cfg.api_version != API_VERSION {
        return Err(ParseError {
            path: "apiVersion".into(),
            location: doc.location_of("apiVersion"),
            kind: ParseErrorKind::WrongVersion,
            message: sanitize(&format!(
                "{:?} is not supported: expected {API_VERSION:?}",
                cfg.api_version
            )),
        });
    }
    if cfg.kind != KIND {
        return Err(ParseError {
            path: "kind".into(),
            location: doc.location_of("kind"),
            kind: ParseErrorKind::WrongVersion,
            message: sanitize(&format!(
                "{:?} is not supported: expected {KIND:?}",
                cfg.kind
            )),
        });
    }
    Ok(())
}

/// One open collection while walking the YAML events.
enum Frame {
    Map {
        path: String,
        /// The key just read (its text and location), waiting for its value.
        key: Option<(String, Location)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Walks the YAML events once more (only after a successful, bounded
/// deserialization) and records where each path's key and value are.
fn index_locations(text: &str) -> HashMap<String, NodeLocation> {
    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((event, span))) = parser.next_event() {
        let loc = Location {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let (is_node, opens) = match &event {
            Event::Scalar(..) | Event::Alias(_) => (true, None),
            Event::MappingStart(..) => (true, Some(true)),
            Event::SequenceStart(..) => (true, Some(false)),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                continue;
            }
            _ => continue,
        };
        if !is_node {
            continue;
        }
        // Where does this node sit: a map key, a map value, an item, the root?
        let node_path = match stack.last_mut() {
            None => Some((String::new(), None)),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key.
                    let name = match &event {
                        Event::Scalar(v, ..) => v.to_string(),
                        _ => "?".to_string(),
                    };
                    *key = Some((name, loc));
                    None
                }
                Some((name, key_loc)) => Some((join(path, &name), Some(key_loc))),
            },
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some((p, None))
            }
        };
        let child_path = match node_path {
            Some((p, key)) => {
                out.insert(p.clone(), NodeLocation { value: loc, key });
                p
            }
            // A complex (collection) key: index its content under "?".
            None => "?".to_string(),
        };
        match opens {
            Some(true) => stack.push(Frame::Map {
                path: child_path,
                key: None,
            }),
            Some(false) => stack.push(Frame::Seq {
                path: child_path,
                next: 0,
            }),
            None => {}
        }
    }
    out
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}
