//! Loading a `socket.json`: parse ([`crate::config`]), then build ([`crate::build`]), which is
//! the validation. What loads is what runs.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::build::{build, Built};
use crate::config::{self, ConfigError, ConnectorConfig};

/// A configuration that passed every check, built, with what the user should hear about it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: ConnectorConfig,
    pub built: Arc<Built>,
    /// Unknown keys and accepted-but-ignored settings, one line each, with their JSON path.
    pub warnings: Vec<String>,
    /// The file was in the old flat format and was converted in memory.
    pub legacy_format: bool,
}

/// Reads and checks a `socket.json` file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    load_str(&text)
}

/// Parses and checks the text of a `socket.json`.
pub fn load_str(text: &str) -> Result<LoadedConfig, ConfigError> {
    let parsed = config::parse_str(text)?;
    check_parsed(parsed).map_err(|mut errors| errors.remove(0))
}

/// Checks an already parsed `socket.json` document (the operator passes the CR's embedded config).
/// The first problem is the error.
pub fn load_value(value: Value) -> Result<LoadedConfig, ConfigError> {
    check_value(value).map_err(|mut errors| errors.remove(0))
}

/// Like [`load_value`], with every problem the build finds (a document that does not deserialize
/// has one error, at its first problem).
pub fn check_value(value: Value) -> Result<LoadedConfig, Vec<ConfigError>> {
    let parsed = config::parse_value(value).map_err(|error| vec![error])?;
    check_parsed(parsed)
}

fn check_parsed(parsed: config::Parsed) -> Result<LoadedConfig, Vec<ConfigError>> {
    match build(&parsed.config) {
        Ok(built) => {
            let mut warnings = parsed.warnings;
            warnings.extend(built.warnings.iter().cloned());
            Ok(LoadedConfig {
                config: parsed.config,
                built: Arc::new(built),
                warnings,
                legacy_format: parsed.legacy_format,
            })
        }
        Err(errors) => Err(errors
            .into_iter()
            .map(|error| match error {
                ConfigError::Invalid { path, message } => {
                    ConfigError::invalid(parsed.user_path(&path), message)
                }
                other => other,
            })
            .collect()),
    }
}

#[cfg(test)]
mod tests;
