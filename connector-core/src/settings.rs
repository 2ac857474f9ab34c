//! Settings of the gateway side that the connector's flags, `tb_gateway.json` and the operator's
//! CRD all spell: how the uplink queue behaves when full, and how often it is forced to disk.

use std::time::Duration;

/// What to do with new records when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// The uplink waits for room, so device reads stop and TCP devices are slowed down by TCP
    /// flow control (UDP datagrams are then dropped by the kernel).
    #[default]
    Block,
    /// The oldest records are deleted to make room.
    DropOldest,
    /// The new records are dropped.
    DropNewest,
}

impl std::str::FromStr for FullPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "block" => Ok(Self::Block),
            "drop-oldest" | "drop_oldest" => Ok(Self::DropOldest),
            "drop-newest" | "drop_newest" => Ok(Self::DropNewest),
            other => Err(format!(
                "unknown queue full policy {other:?} (expected block, drop-oldest or drop-newest)"
            )),
        }
    }
}

/// When records written to disk are forced to the device with fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never: every write reaches the operating system at once, so a crash or SIGKILL of the
    /// process loses nothing, but a power loss or kernel crash may lose what was not yet written
    /// back.
    Never,
    /// After every write (`fdatasync`): nothing is lost even on power loss; slowest.
    Always,
    /// Every interval: a power loss loses at most that much.
    Every(Duration),
}

/// Every second, the connector's default.
impl Default for Fsync {
    fn default() -> Self {
        Self::Every(Duration::from_secs(1))
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "never" => Ok(Self::Never),
            "always" => Ok(Self::Always),
            ms => ms
                .strip_suffix("ms")
                .unwrap_or(ms)
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(|ms| Self::Every(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    format!("unknown fsync policy {text:?} (expected never, always or milliseconds like 1000ms)")
                }),
        }
    }
}
