//! Devices renamed in ThingsBoard, shared by the uplink (data goes out under the new name) and
//! the downlink (requests for the new name reach the configured device). The renamings are kept
//! in the disk queue's directory, as the gateway keeps them in `connected_devices.json`, so they
//! hold across restarts; with the memory queue they last until the process ends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use tracing::{info, warn};

use connector_core::thingsboard::renames::DeviceRenames;

/// The file in the queue directory that holds the renamings.
pub const FILE_NAME: &str = "device-renames.json";

pub struct Renames {
    current: ArcSwap<DeviceRenames>,
    /// `handleDeviceRenaming`: when off, the notifications are answered and ignored, as the
    /// gateway does.
    enabled: bool,
    file: Option<PathBuf>,
    /// Updates one at a time, so the file ends with the last one.
    update: Mutex<()>,
}

impl Renames {
    /// Starts with what `directory` holds (a file that cannot be read is reported and ignored:
    /// the devices then go out under their configured names).
    pub fn open(enabled: bool, directory: Option<&Path>) -> Self {
        let file = directory.map(|directory| directory.join(FILE_NAME));
        let kept = file.as_deref().and_then(read).unwrap_or_default();
        if !kept.is_empty() {
            info!(renamed = ?kept, "devices renamed in ThingsBoard");
        }
        Self {
            current: ArcSwap::from_pointee(kept),
            enabled,
            file,
            update: Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<DeviceRenames> {
        self.current.load_full()
    }

    /// Handles gateway RPC `device_renamed` or `device_deleted`; the reply the gateway gives.
    pub fn handle(&self, method: &str, params: &Value) -> Value {
        if !self.enabled {
            info!(
                method,
                %params,
                "device renaming notification ignored: handleDeviceRenaming is off"
            );
            return json!({"success": true});
        }
        let _one_at_a_time = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = DeviceRenames::clone(&self.current.load());
        let applied = match method {
            "device_renamed" => next.apply_renamed(params),
            _ => next.apply_deleted(params),
        };
        match applied {
            Ok(false) => {}
            Ok(true) => {
                info!(method, %params, renamed = ?next, "device renamed in ThingsBoard");
                self.keep(&next);
                self.current.store(Arc::new(next));
            }
            Err(error) => {
                warn!(%error, "device renaming notification ignored");
                return json!({"error": error.to_string(), "code": 500});
            }
        }
        json!({"success": true})
    }

    fn keep(&self, renames: &DeviceRenames) {
        let Some(file) = &self.file else {
            warn!("device renaming kept in memory only: with the memory queue it is forgotten at restart (a disk queue keeps it)");
            return;
        };
        let written = serde_json::to_vec(renames)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(file, &bytes));
        if let Err(error) = written {
            warn!(file = %file.display(), %error, "device renaming not saved; it holds until the process ends");
        }
    }
}

fn read(file: &Path) -> Option<DeviceRenames> {
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            warn!(file = %file.display(), %error, "device renamings not read; devices go out under their configured names");
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(renames) => Some(renames),
        Err(error) => {
            warn!(file = %file.display(), %error, "device renamings not understood; devices go out under their configured names");
            None
        }
    }
}

/// A crash mid-write leaves the old file or the new one, never half of one.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = file.with_extension("json.tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamings_survive_a_restart_in_the_directory() {
        let directory = tempfile::tempdir().unwrap();
        let renames = Renames::open(true, Some(directory.path()));
        assert_eq!(
            renames.handle("device_renamed", &json!({"A": "B"})),
            json!({"success": true})
        );
        let reopened = Renames::open(true, Some(directory.path()));
        assert_eq!(reopened.current().in_thingsboard("A"), "B");
        reopened.handle("device_deleted", &json!("B"));
        assert!(Renames::open(true, Some(directory.path()))
            .current()
            .is_empty());
    }

    #[test]
    fn off_the_notifications_change_nothing() {
        let renames = Renames::open(false, None);
        assert_eq!(
            renames.handle("device_renamed", &json!({"A": "B"})),
            json!({"success": true})
        );
        assert!(renames.current().is_empty());
    }

    #[test]
    fn bad_params_are_refused_and_a_bad_file_is_ignored() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(FILE_NAME), b"[1,").unwrap();
        let renames = Renames::open(true, Some(directory.path()));
        assert!(renames.current().is_empty());
        assert_eq!(renames.handle("device_renamed", &json!("A"))["code"], 500);
    }
}
