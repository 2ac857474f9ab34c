//! `tracing` setup: the connector's `logLevel` (TRACE…NONE), human or JSON lines on stderr.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::config::LogLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Maps ThingsBoard's level names onto tracing levels.
pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Critical => LevelFilter::ERROR,
        LogLevel::None => LevelFilter::OFF,
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins (for debugging dependencies);
/// otherwise the connector logs at `level` and its libraries only warnings.
pub fn init(level: LogLevel, format: LogFormat) {
    let level = level_filter(level);
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        _ if level == LevelFilter::OFF => EnvFilter::new("off"),
        // rumqttd (the demo broker) logs client disconnects as errors.
        _ => EnvFilter::new(format!("warn,rumqttd=off,socket_connector={level}")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
