//! Hot reload: a new `socket.json` replaces the devices of the running connector without
//! dropping device connections or the MQTT session. Triggered by SIGHUP and by a change of the
//! file's content (polled, which also sees Kubernetes ConfigMap updates: those swap a symlink,
//! which inotify-style watches on the file itself miss). An invalid file, or one that changes the
//! `socket` section (which needs a new listener), is rejected and the running configuration kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::events::{ConfigReload, ReloadChanges};
use crate::live::Live;
use crate::transport::DeviceLinks;
use connector_core::config::{ConnectorConfig, DeviceConfig, LogLevel};
use connector_core::load::{load_file, LoadedConfig};

/// How often the file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What a reload changed, by device name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Top-level keys that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
    /// `logLevel` or `enableRemoteLogging` changed (applied at once).
    pub logging_changed: bool,
}

impl ReloadSummary {
    pub fn changes(&self) -> ReloadChanges<'_> {
        ReloadChanges {
            added: &self.added,
            removed: &self.removed,
            changed: &self.changed,
            needs_restart: &self.needs_restart,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.logging_changed
    }
}

/// Compares two configurations: `Err` when `new` cannot be applied to a running connector.
pub fn plan(old: &ConnectorConfig, new: &ConnectorConfig) -> Result<ReloadSummary, String> {
    if old.socket != new.socket {
        return Err(
            "the socket section changed (address, port, type, framing, TLS or limits); restart the connector to apply it"
                .to_owned(),
        );
    }
    let mut summary = ReloadSummary::default();
    fn by_name(config: &ConnectorConfig) -> indexmap::IndexMap<String, &DeviceConfig> {
        config
            .devices
            .iter()
            .map(|d| (d.device_name.clone(), d))
            .collect()
    }
    let (before, after) = (by_name(old), by_name(new));
    for (name, device) in &after {
        match before.get(name) {
            None => summary.added.push(name.clone()),
            Some(previous) if previous != device => summary.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    summary.removed = before
        .keys()
        .filter(|name| !after.contains_key(*name))
        .cloned()
        .collect();
    if old.name != new.name {
        summary.needs_restart.push("name");
    }
    summary.logging_changed =
        old.log_level != new.log_level || old.enable_remote_logging != new.enable_remote_logging;
    Ok(summary)
}

/// Applies configurations to the running connector; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<Live>,
    links: Arc<DeviceLinks>,
    /// `--log-level`: wins over the configuration's `logLevel`, before and after a reload.
    log_level_override: Option<LogLevel>,
}

impl Reloader {
    pub fn new(live: Arc<Live>, links: Arc<DeviceLinks>) -> Self {
        Self {
            live,
            links,
            log_level_override: None,
        }
    }

    pub fn with_log_level_override(mut self, level: Option<LogLevel>) -> Self {
        self.log_level_override = level;
        self
    }

    /// The running configuration.
    pub fn current(&self) -> Arc<ConnectorConfig> {
        self.live.load().config.clone()
    }

    /// How many configurations were installed since start (0: the one it started with).
    pub fn generation(&self) -> u64 {
        self.live.generation()
    }

    /// Installs `new` unless [`plan`] rejects it.
    pub fn apply(&self, new: &LoadedConfig) -> Result<ReloadSummary, String> {
        let current = self.live.load();
        let summary = plan(&current.config, &new.config)?;
        if summary.is_empty() && *current.config == new.config {
            return Ok(summary);
        }
        let old_names: Vec<&str> = current
            .config
            .devices
            .iter()
            .map(|d| d.device_name.as_str())
            .collect();
        let old_index: Vec<Option<usize>> = new
            .config
            .devices
            .iter()
            .map(|d| old_names.iter().position(|name| *name == d.device_name))
            .collect();
        self.live.replace(new);
        self.links.reindex(&old_index);
        if summary.logging_changed {
            let level = self
                .log_level_override
                .or(new.config.log_level)
                .unwrap_or(LogLevel::Info);
            crate::logging::set_level(level);
            crate::logging::set_remote_logging(new.config.enable_remote_logging == Some(true));
        }
        Ok(summary)
    }

    /// Reads, checks and applies the file; logs and counts the outcome.
    pub fn reload_file(&self, path: &std::path::Path) -> bool {
        let loaded = match load_file(path) {
            Ok(loaded) => loaded,
            Err(e) => {
                return self.rejected(path, &format!("invalid configuration: {e}"));
            }
        };
        for warning in &loaded.warnings {
            warn!(file = %path.display(), "{warning}");
        }
        let outcome = self.apply(&loaded);
        ConfigReload {
            source: &path.display(),
            outcome: outcome
                .as_ref()
                .map(ReloadSummary::changes)
                .map_err(String::as_str),
        }
        .emit();
        outcome.is_ok()
    }

    fn rejected(&self, path: &std::path::Path, reason: &str) -> bool {
        ConfigReload {
            source: &path.display(),
            outcome: Err(reason),
        }
        .emit();
        false
    }
}

/// Reloads on SIGHUP and whenever the file's content changes, until `stop`.
pub async fn watch(path: PathBuf, reloader: Reloader, mut stop: watch::Receiver<bool>) {
    let mut last = std::fs::read(&path).ok();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = hangup_signal();
    loop {
        let forced = tokio::select! {
            _ = poll.tick() => false,
            _ = next_hangup(&mut hangup) => true,
            _ = crate::stop::stopped(&mut stop) => return,
        };
        let current = std::fs::read(&path).ok();
        if forced || (current.is_some() && current != last) {
            if forced {
                info!(file = %path.display(), "SIGHUP: reloading the configuration");
            }
            reloader.reload_file(&path);
            last = current;
        }
    }
}

/// Bumps `changed` whenever one of `files` changes its content (polled like the configuration,
/// which also sees Kubernetes Secret updates: they swap a symlink), until `stop`.
pub async fn watch_files(
    files: Vec<PathBuf>,
    changed: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let read = |files: &[PathBuf]| -> Vec<Option<Vec<u8>>> {
        files.iter().map(|file| std::fs::read(file).ok()).collect()
    };
    let mut last = read(&files);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = crate::stop::stopped(&mut stop) => return,
        }
        let current = read(&files);
        // A file that vanished for a moment (a Secret being swapped) is not a change yet.
        if current != last && current.iter().all(Option::is_some) {
            info!(files = ?files, "credential or certificate files changed");
            changed.send_modify(|generation| *generation += 1);
            last = current;
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        signal.recv().await;
        return;
    }
    let _ = hangup;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests;
