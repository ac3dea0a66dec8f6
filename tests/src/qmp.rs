//! A minimal QMP (QEMU Machine Protocol) client over the VM's unix socket:
//! one connection per command (greeting, `qmp_capabilities`, the command),
//! asynchronous events skipped; or one connection that only reads the
//! events ([`events`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// A QMP command failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// QEMU sent something that is not a QMP message.
    #[error("QMP socket {path}: unexpected reply {reply:?}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was received.
        reply: String,
    },
    /// QEMU refused the command.
    #[error("QMP command {command} failed: {error}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error object.
        error: Value,
    },
}

/// Runs one QMP command (with optional arguments) and returns its `return`
/// value.
pub fn execute(socket: &Path, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
    let io = |source| QmpError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);

    handshake(socket, &mut reader, &mut writer)?;

    let mut request = json!({ "execute": command });
    if let Some(args) = arguments {
        request["arguments"] = args;
    }
    send(socket, &mut writer, &request)?;
    reply(socket, &mut reader, command)
}

/// The asynchronous events QEMU sends on `socket`, after the greeting and
/// `qmp_capabilities`, until QEMU closes it. No read timeout: the iterator
/// ends when QEMU exits.
pub fn events(socket: &Path) -> Result<impl Iterator<Item = Value>, QmpError> {
    let io = |source| QmpError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);
    handshake(socket, &mut reader, &mut writer)?;
    let socket = socket.to_path_buf();
    Ok(std::iter::from_fn(move || {
        read_message(&socket, &mut reader)
            .ok()
            .filter(|msg| msg.get("event").is_some())
    }))
}

/// Reads the greeting and negotiates capabilities (command mode).
fn handshake(
    socket: &Path,
    reader: &mut BufReader<UnixStream>,
    writer: &mut UnixStream,
) -> Result<(), QmpError> {
    let greeting = read_message(socket, reader)?;
    if greeting.get("QMP").is_none() {
        return Err(QmpError::Protocol {
            path: socket.to_path_buf(),
            reply: greeting.to_string(),
        });
    }
    send(socket, writer, &json!({ "execute": "qmp_capabilities" }))?;
    reply(socket, reader, "qmp_capabilities").map(|_| ())
}

fn send(socket: &Path, writer: &mut UnixStream, msg: &Value) -> Result<(), QmpError> {
    let mut line = msg.to_string();
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .map_err(|source| QmpError::Io {
            path: socket.to_path_buf(),
            source,
        })
}

/// Reads messages until the reply to `command` (events are skipped).
fn reply(
    socket: &Path,
    reader: &mut BufReader<UnixStream>,
    command: &str,
) -> Result<Value, QmpError> {
    loop {
        let msg = read_message(socket, reader)?;
        if let Some(ret) = msg.get("return") {
            return Ok(ret.clone());
        }
        if let Some(error) = msg.get("error") {
            return Err(QmpError::Command {
                command: command.to_string(),
                error: error.clone(),
            });
        }
        if msg.get("event").is_none() {
            return Err(QmpError::Protocol {
                path: socket.to_path_buf(),
                reply: msg.to_string(),
            });
        }
    }
}

fn read_message(socket: &Path, reader: &mut BufReader<UnixStream>) -> Result<Value, QmpError> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(|source| QmpError::Io {
        path: socket.to_path_buf(),
        source,
    })?;
    if n == 0 {
        return Err(QmpError::Protocol {
            path: socket.to_path_buf(),
            reply: "(connection closed)".into(),
        });
    }
    serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
        path: socket.to_path_buf(),
        reply: line.trim().to_string(),
    })
}
