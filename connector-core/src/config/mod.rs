//! The `socket.json` model and its parsing: format detection, the old-format adapter,
//! deserialization with JSON paths in errors and unknown-key warnings. What serde cannot check is
//! checked by [`crate::build`], which turns the model into the runtime types.

mod legacy;
mod model;
mod strategy;
mod typed;

pub use legacy::{is_legacy_format, to_current_format};
pub use model::*;
pub use strategy::*;
pub use typed::*;

use serde_json::Value;

/// A configuration problem, located by its JSON path (`devices[1].deviceName: missing`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {message}")]
    Read { file: String, message: String },
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A `socket.json` that deserialized, before [`crate::build`] checks what serde cannot express.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: ConnectorConfig,
    /// Unknown keys and the old-format note, one line each, with their JSON path.
    pub warnings: Vec<String>,
    /// The document was in the old flat format and was converted in memory.
    pub legacy_format: bool,
}

impl Parsed {
    /// A path of the current format as the user wrote it (old-format files have other paths).
    pub fn user_path(&self, path: &str) -> String {
        if self.legacy_format {
            legacy::user_path(path)
        } else {
            path.to_owned()
        }
    }
}

/// Parses the text of a `socket.json`.
pub fn parse_str(text: &str) -> Result<Parsed, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    parse_value(value)
}

/// Deserializes a `socket.json` document (old format converted), collecting unknown keys as
/// warnings. The error is serde's first problem, at the user's JSON path.
pub fn parse_value(value: Value) -> Result<Parsed, ConfigError> {
    if !value.is_object() {
        return Err(ConfigError::invalid(
            "(root)",
            "expected a JSON object with \"socket\" and \"devices\"",
        ));
    }
    let legacy_format = is_legacy_format(&value);
    let value = if legacy_format {
        to_current_format(value)
    } else {
        value
    };
    let user_path = |path: String| {
        if legacy_format {
            legacy::user_path(&path)
        } else {
            path
        }
    };

    let mut ignored = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(format_ignored_path(&path));
    let deserializer = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let config: ConnectorConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let (path, message) = describe_serde_error(path, &e.into_inner().to_string());
        ConfigError::invalid(user_path(path), message)
    })?;

    let mut warnings: Vec<String> = ignored
        .into_iter()
        .map(|path| format!("{}: unknown key, ignored", user_path(path)))
        .collect();
    if legacy_format {
        warnings.push(
            "old socket connector configuration format detected; converted in memory \
             (`socket-connector migrate` rewrites the file)"
                .to_owned(),
        );
    }
    Ok(Parsed {
        config,
        warnings,
        legacy_format,
    })
}

/// The uplink converter every ThingsBoard device uses unless told otherwise.
pub const DEFAULT_CONVERTER: &str = "BytesSocketUplinkConverter";
/// Largest accepted read size: the largest UDP datagram, rounded up.
pub const MAX_BUFFER_SIZE: u32 = 1 << 20;

/// Serde says "missing field `deviceName`" at the parent's path; users want the field's path.
fn describe_serde_error(path: String, message: &str) -> (String, String) {
    let message = strip_position(message);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let path = if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return (path, "missing".to_owned());
    }
    let path = if path == "." || path.is_empty() {
        "(root)".to_owned()
    } else {
        path
    };
    (path, message)
}

/// serde_json appends " at line L column C" to messages; paths locate errors better here.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn format_ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = format_ignored_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_ignored_path(parent),
    }
}
