//! Remote logging as in the ThingsBoard gateway: with `enableRemoteLogging`, the connector's log
//! records at or above `logLevel` are also sent to ThingsBoard as the gateway device's telemetry
//! `<name>_LOGS`; errors are counted for `<name>_ERRORS_COUNT`.
//!
//! The tracing layer only formats and `try_send`s into a bounded queue, so logging never blocks
//! the data path; records beyond the queue are dropped and counted.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::clock::now_ms;
use crate::events::RemoteLogDropped;

/// Records waiting to be sent, as in ThingsBoard's handler (max 1000, overflow dropped).
pub const QUEUE_CAPACITY: usize = 1000;

/// One formatted record.
#[derive(Debug, Clone)]
pub struct RemoteRecord {
    pub ts_ms: i64,
    pub line: String,
}

/// What the connector's remote-log task consumes.
pub struct RemoteLogs {
    pub records: mpsc::Receiver<RemoteRecord>,
    pub counters: Arc<LogCounters>,
}

#[derive(Debug, Default)]
pub struct LogCounters {
    /// ERROR (and CRITICAL) records since start.
    pub errors: AtomicU64,
}

static REMOTE: OnceLock<Mutex<Option<RemoteLogs>>> = OnceLock::new();

/// Hands the remote-log queue and counters to the connector (once).
pub fn take() -> Option<RemoteLogs> {
    REMOTE
        .get()?
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// Whether records are forwarded now (`enableRemoteLogging`, which a reload can switch).
static FORWARDING: AtomicBool = AtomicBool::new(false);

pub fn set_forwarding(on: bool) {
    FORWARDING.store(on, Ordering::Relaxed);
}

/// The layer feeding [`take`]'s queue; while forwarding is off it only counts errors.
pub fn layer(forward: bool) -> RemoteLayer {
    set_forwarding(forward);
    let counters = Arc::new(LogCounters::default());
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let _ = REMOTE.set(Mutex::new(Some(RemoteLogs {
        records: receiver,
        counters: counters.clone(),
    })));
    RemoteLayer { sender, counters }
}

pub struct RemoteLayer {
    sender: mpsc::Sender<RemoteRecord>,
    counters: Arc<LogCounters>,
}

impl<S: Subscriber> Layer<S> for RemoteLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        if !metadata.target().starts_with("socket_connector") {
            return;
        }
        if *metadata.level() == Level::ERROR {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if !FORWARDING.load(Ordering::Relaxed) {
            return;
        }
        let ts_ms = now_ms();
        let line = format_record(event, ts_ms);
        if self.sender.try_send(RemoteRecord { ts_ms, line }).is_err() {
            RemoteLogDropped { records: 1 }.emit();
        }
    }
}

/// ThingsBoard's format: `%(asctime)s - |%(levelname)s|<%(threadName)s> [%(filename)s] -
/// %(module)s %(funcName)s - %(lineno)d - %(message)s`. Rust has no function names at run time;
/// the module path stands in for module and function.
fn format_record(event: &Event<'_>, ts_ms: i64) -> String {
    let metadata = event.metadata();
    let level = match *metadata.level() {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    };
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("thread");
    let file = metadata
        .file()
        .and_then(|f| f.rsplit('/').next())
        .unwrap_or("?");
    let module = metadata.module_path().unwrap_or_else(|| metadata.target());
    let mut message = MessageVisitor::default();
    event.record(&mut message);
    format!(
        "{} - |{level}|<{thread}> [{file}] - {module} - {} - {}",
        asctime(ts_ms),
        metadata.line().unwrap_or(0),
        message.text
    )
}

#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.text);
            let _ = write!(self.text, "{value:?}");
            self.text.push_str(&fields);
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

/// Python logging's asctime in UTC: `2026-11-25 13:40:01,123`.
pub fn asctime(ts_ms: i64) -> String {
    let seconds = ts_ms.div_euclid(1000);
    let millis = ts_ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{millis:03}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asctime_like_python() {
        assert_eq!(asctime(0), "1970-01-01 00:00:00,000");
        assert_eq!(asctime(1_795_613_632_556), "2026-11-25 13:33:52,556");
        assert_eq!(asctime(951_782_400_001), "2000-02-29 00:00:00,001");
    }
}

#[cfg(test)]
mod layer_tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The only test that installs the layer: it owns the process-wide queue.
    #[test]
    fn forwards_connector_records_and_counts_errors() {
        let layer = layer(true);
        let mut logs = take().expect("queue handed over once");
        assert!(take().is_none());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "socket_connector::test", peer = "1.2.3.4:5", "hello");
            tracing::error!(target: "socket_connector::test", "broken");
            tracing::error!(target: "other_crate", "not ours");
        });
        assert_eq!(logs.counters.errors.load(Ordering::Relaxed), 1);
        let records = &mut logs.records;
        let first = records.try_recv().unwrap();
        assert!(first.line.contains(" - |INFO|<"), "{}", first.line);
        assert!(
            first.line.ends_with(" - hello peer=1.2.3.4:5"),
            "{}",
            first.line
        );
        assert!(records.try_recv().unwrap().line.contains("|ERROR|"));
        assert!(records.try_recv().is_err());
    }
}
