//! `tracing` setup: the connector's `logLevel` (TRACE…NONE), human or JSON lines on stderr, and
//! the remote-logging layer ([`remote`]).

pub mod remote;

use std::sync::OnceLock;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use connector_core::config::LogLevel;

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

/// Where a reload (or ThingsBoard's UI) changes the level of the running process.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// `RUST_LOG`, when set, wins (for debugging dependencies); otherwise the connector logs at
/// `level` and its libraries only warnings.
fn filter(level: LogLevel) -> EnvFilter {
    let level = level_filter(level);
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        _ if level == LevelFilter::OFF => EnvFilter::new("off"),
        // rumqttd (the demo broker) logs client disconnects as errors; fjall logs a failed disk
        // write at every retry, which the queue reports once per episode itself.
        _ => EnvFilter::new(format!(
            "warn,rumqttd=off,fjall=off,lsm_tree=off,socket_connector={level}"
        )),
    }
}

/// Changes the level of the running process (a configuration reload). Without an installed
/// subscriber (library use, tests) there is nothing to change.
pub fn set_level(level: LogLevel) {
    if let Some(handle) = LEVEL.get() {
        let _ = handle.reload(filter(level));
    }
}

/// Switches the forwarding of records to ThingsBoard (`enableRemoteLogging`) on or off.
pub fn set_remote_logging(on: bool) {
    remote::set_forwarding(on);
}

/// Installs the global subscriber at `level`. With `remote_logging`, records that pass the
/// filter are also queued for ThingsBoard; both can change later ([`set_level`],
/// [`set_remote_logging`]).
pub fn init(level: LogLevel, format: LogFormat, remote_logging: bool) {
    let (filter, handle) = reload::Layer::new(filter(level));
    let _ = LEVEL.set(handle);
    let output = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(remote::layer(remote_logging))
        .try_init();
    // Panics become log records (JSON in Kubernetes), with where they happened.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, "panic: {message}");
    }));
}
