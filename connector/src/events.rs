//! Internal events: every observable event of the connector is one type here whose `emit()`
//! writes the log line and counts the metric, so that logs and metrics cannot disagree and noisy
//! events are throttled in one place (as Vector's `internal_events`). Metric labels are the
//! `label()` of the reason enums below; `docs/observability.md` lists each (a test checks).

use std::fmt::Display;

use tracing::{debug, error, info, warn};

use crate::metrics::metrics;

/// Defines a label enum: its variants, their label strings and the list of all of them.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn label(self) -> &'static str {
                match self { $(Self::$variant => $label),+ }
            }
        }
    };
}

labels!(
    /// Why something was dropped: `socket_connector_dropped_total{reason}`.
    DropReason {
        AttributeRequestQueueFull => "attribute_request_queue_full",
        RemoteLogQueueFull => "remote_log_queue_full",
        FrameTooLong => "frame_too_long",
        BadLengthField => "bad_length_field",
        QueueFullDropOldest => "queue_full_drop_oldest",
        QueueFullDropNewest => "queue_full_drop_newest",
        /// The disk queue could not be written (drop policies; `block` waits instead).
        QueueUnwritable => "queue_unwritable",
        /// One datapoint whose publish alone exceeds ThingsBoard's payload limit.
        DatapointTooLarge => "datapoint_too_large",
        /// A queued publish that kept breaking the MQTT session (quarantined).
        PoisonRecord => "poison_record",
        /// UDP datagrams the kernel dropped because the socket's receive buffer was full.
        UdpReceiveBufferFull => "udp_receive_buffer_full",
    }
);

labels!(
    /// Why a device connection was closed as soon as it was accepted:
    /// `socket_connector_connections_rejected_total{reason}`.
    RejectReason {
        NoMatchingDevice => "no_matching_device",
        TlsHandshake => "tls_handshake",
        MaxConnections => "max_connections",
        MaxConnectionsPerPeer => "max_connections_per_peer",
    }
);

labels!(
    /// Why the connector closed an open device connection:
    /// `socket_connector_connections_closed_total{reason}`.
    CloseReason {
        IdleTimeout => "idle_timeout",
        /// A bad frame with `onOversize: close`.
        FrameTooLong => "frame_too_long",
        BadLengthField => "bad_length_field",
    }
);

labels!(
    /// `socket_connector_config_reloads_total{result}`.
    ReloadResult {
        Applied => "applied",
        Rejected => "rejected",
    }
);

labels!(
    /// `socket_connector_attribute_requests_total{outcome}`.
    AttributeRequestOutcome {
        Sent => "sent",
        Answered => "answered",
        TimedOut => "timed_out",
    }
);

labels!(
    /// `socket_connector_attribute_updates_total{outcome}`.
    AttributeUpdateOutcome {
        Written => "written",
        Failed => "failed",
    }
);

labels!(
    /// `socket_connector_rpc_requests_total{outcome}`.
    RpcOutcomeLabel {
        Ok => "ok",
        Error => "error",
    }
);

/// The metric's series of a frame error.
fn frame_drop_reason(error: &connector_core::framing::FrameError) -> DropReason {
    use connector_core::framing::FrameError;
    match error {
        FrameError::BadLength { .. } => DropReason::BadLengthField,
        FrameError::TooLong { .. } | FrameError::Io(_) => DropReason::FrameTooLong,
    }
}

/// A frame the framer rejected (dropped; the framer resynchronises or the connection closes).
pub struct FrameRejected<'a> {
    pub error: &'a connector_core::framing::FrameError,
    pub peer: &'a str,
    /// Log it (callers log the first per connection or interval; all are counted).
    pub log: bool,
}

impl FrameRejected<'_> {
    pub fn emit(self) {
        let reason = frame_drop_reason(self.error);
        metrics().dropped.with_label_values(&[reason.label()]).inc();
        if self.log {
            warn!(peer = %self.peer, error = %self.error, "frame dropped (further ones from this peer are only counted)");
        }
    }
}

/// A device TCP connection accepted.
pub struct ConnectionAccepted<'a> {
    pub peer: &'a str,
}

impl ConnectionAccepted<'_> {
    pub fn emit(self) {
        metrics().connections_accepted.inc();
        debug!(peer = %self.peer, "new connection established");
    }
}

/// A device TCP connection closed as soon as it was accepted.
pub struct ConnectionRejected<'a> {
    pub reason: RejectReason,
    pub peer: &'a str,
    /// What the log line adds (the limit reached, the TLS error).
    pub detail: &'a dyn Display,
}

impl ConnectionRejected<'_> {
    pub fn emit(self) {
        metrics()
            .connections_rejected
            .with_label_values(&[self.reason.label()])
            .inc();
        match self.reason {
            RejectReason::NoMatchingDevice => info!(
                peer = %self.peer,
                "connection closed: no device's address filter matches this peer"
            ),
            RejectReason::TlsHandshake => {
                info!(peer = %self.peer, "connection closed: TLS handshake {}", self.detail)
            }
            RejectReason::MaxConnections | RejectReason::MaxConnectionsPerPeer => {
                let ip = self.peer.rsplit_once(':').map_or(self.peer, |(ip, _)| ip);
                warn_throttled(
                    &format!("{}:{ip}", self.reason.label()),
                    format_args!(
                        "connection from {} closed: {} reached ({})",
                        self.peer,
                        self.reason.label(),
                        self.detail
                    ),
                )
            }
        }
    }
}

/// The connector closed an open device connection because a limit was hit.
pub struct ConnectionClosed<'a> {
    pub reason: CloseReason,
    pub peer: &'a str,
    pub detail: &'a dyn Display,
}

impl ConnectionClosed<'_> {
    pub fn emit(self) {
        metrics()
            .connections_closed
            .with_label_values(&[self.reason.label()])
            .inc();
        match self.reason {
            CloseReason::IdleTimeout => {
                let ip = self.peer.rsplit_once(':').map_or(self.peer, |(ip, _)| ip);
                warn_throttled(
                    &format!("idle_timeout:{ip}"),
                    format_args!(
                        "connection from {} closed: nothing received for {} (idleTimeoutMs)",
                        self.peer, self.detail
                    ),
                )
            }
            CloseReason::FrameTooLong | CloseReason::BadLengthField => info!(
                peer = %self.peer,
                "connection closed after a bad frame (onOversize: close): {}",
                self.detail
            ),
        }
    }
}

impl CloseReason {
    pub fn of_frame_error(error: &connector_core::framing::FrameError) -> Self {
        match frame_drop_reason(error) {
            DropReason::BadLengthField => Self::BadLengthField,
            _ => Self::FrameTooLong,
        }
    }
}

/// A UDP datagram from a peer no device matches.
pub struct DatagramRejected<'a> {
    pub peer: &'a str,
}

impl DatagramRejected<'_> {
    pub fn emit(self) {
        metrics().datagrams_rejected.inc();
        debug!(peer = %self.peer, "datagram dropped: no device's address filter matches this peer");
    }
}

/// Datagrams the kernel dropped for the UDP socket since the last look: the receive buffer was
/// full (the connector fell behind a burst).
pub struct UdpKernelDrops {
    pub count: u64,
    pub receive_buffer: usize,
}

impl UdpKernelDrops {
    pub fn emit(self) {
        count_drop(DropReason::UdpReceiveBufferFull, self.count as usize);
        warn_throttled(
            "udp_receive_buffer_full",
            format_args!(
                "{} UDP datagrams dropped by the kernel: the socket's receive buffer ({} bytes) was full; raise socket.receiveBufferSize (net.core.rmem_max caps it)",
                self.count, self.receive_buffer
            ),
        );
    }
}

/// The kernel granted a smaller UDP receive buffer than configured.
pub struct UdpReceiveBufferCapped {
    pub requested: usize,
    pub granted: usize,
}

impl UdpReceiveBufferCapped {
    pub fn emit(self) {
        warn!(
            requested = self.requested,
            granted = self.granted,
            "the kernel capped the UDP receive buffer at {} of the {} bytes asked for; bursts beyond it are dropped (raise the sysctl net.core.rmem_max)",
            self.granted, self.requested
        );
    }
}

/// An attribute request dropped because too many wait to be published.
pub struct AttributeRequestDropped<'a> {
    pub device: &'a str,
}

impl AttributeRequestDropped<'_> {
    pub fn emit(self) {
        count_drop(DropReason::AttributeRequestQueueFull, 1);
        warn_throttled(
            "attribute_request_queue_full",
            format_args!(
                "attribute request of {} dropped: too many waiting",
                self.device
            ),
        );
    }
}

/// Remote log records dropped (the remote-log queue or the MQTT client was full). Only counted
/// here: logging it would feed the very queue that is full; the remote-log task warns about the
/// [`RemoteLogDropped::total`] from outside the log layer.
pub struct RemoteLogDropped {
    pub records: usize,
}

impl RemoteLogDropped {
    pub fn emit(self) {
        count_drop(DropReason::RemoteLogQueueFull, self.records);
    }

    pub fn total() -> u64 {
        metrics()
            .dropped
            .with_label_values(&[DropReason::RemoteLogQueueFull.label()])
            .get()
    }
}

/// Records the uplink queue dropped by its policy: full, or its disk store not writable.
pub struct QueueDrops {
    pub oldest: usize,
    pub newest: usize,
    pub unwritable: usize,
    pub max_bytes: u64,
}

impl QueueDrops {
    pub fn emit(self) {
        count_drop(DropReason::QueueFullDropOldest, self.oldest);
        count_drop(DropReason::QueueFullDropNewest, self.newest);
        count_drop(DropReason::QueueUnwritable, self.unwritable);
        if self.oldest + self.newest > 0 {
            warn_throttled(
                "queue_full",
                format_args!(
                    "uplink queue full ({} bytes): {} old and {} new records dropped",
                    self.max_bytes, self.oldest, self.newest
                ),
            );
        }
        if self.unwritable > 0 {
            warn_throttled(
                "queue_unwritable",
                format_args!(
                    "disk queue not writable: {} new records dropped (queue full policy)",
                    self.unwritable
                ),
            );
        }
    }
}

/// A datapoint that no publish below the payload limit can carry: dropped, so that it cannot hold
/// up everything queued behind it.
pub struct DatapointTooLarge<'a> {
    pub too_large: &'a connector_core::thingsboard::api::TooLarge,
    pub max_payload: usize,
}

impl DatapointTooLarge<'_> {
    pub fn emit(self) {
        count_drop(DropReason::DatapointTooLarge, 1);
        error!(
            device = %self.too_large.device,
            key = %self.too_large.key,
            bytes = self.too_large.bytes,
            max_payload = self.max_payload,
            "datapoint dropped: its publish alone exceeds ThingsBoard's payload limit (raise --max-payload-size and ThingsBoard's limit, or send less per key)"
        );
    }
}

/// A queued publish quarantined because the MQTT session broke every time it was sent.
pub struct PoisonRecord<'a> {
    pub topic: &'a str,
    pub bytes: usize,
    pub sessions: u32,
}

impl PoisonRecord<'_> {
    pub fn emit(self) {
        count_drop(DropReason::PoisonRecord, 1);
        error!(
            topic = self.topic,
            bytes = self.bytes,
            sessions = self.sessions,
            "publish quarantined: ThingsBoard dropped the connection each time it was sent (too large for the broker, or refused); the records after it go on"
        );
    }
}

/// Devices disconnected and forgotten because more than `max_devices` were announced (names read
/// from frames).
pub struct DevicesEvicted {
    pub count: usize,
    pub max_devices: usize,
}

impl DevicesEvicted {
    pub fn emit(self) {
        metrics().devices_evicted.inc_by(self.count as u64);
        warn_throttled(
            "devices_evicted",
            format_args!(
                "{} devices silent the longest disconnected from ThingsBoard: more than --max-devices {} were connected",
                self.count, self.max_devices
            ),
        );
    }
}

/// A connection to ThingsBoard failed or was lost; the session retries after `retry_in`.
pub struct ConnectionFailed<'a> {
    pub endpoint: &'a str,
    pub failure: crate::thingsboard::link::ConnectFailure,
    /// What to check, in words.
    pub hint: &'a str,
    /// An established session was lost (not an attempt that failed).
    pub was_connected: bool,
    pub retry_in: std::time::Duration,
    pub queued: u64,
}

impl ConnectionFailed<'_> {
    pub fn emit(self) {
        if !self.was_connected {
            metrics()
                .mqtt_connect_failures
                .with_label_values(&[self.failure.label()])
                .inc();
        }
        let what = if self.was_connected {
            "ThingsBoard connection lost"
        } else {
            "ThingsBoard connection failed"
        };
        warn!(
            endpoint = self.endpoint,
            reason = self.failure.label(),
            retry_in_ms = self.retry_in.as_millis() as u64,
            queued = self.queued,
            "{what}: {}",
            self.hint
        );
    }
}

/// The disk queue could be written again after a failure.
pub struct QueueRecovered<'a> {
    pub records: u64,
    /// What the failure was.
    pub reason: &'a str,
}

impl QueueRecovered<'_> {
    pub fn emit(self) {
        info!(
            records = self.records,
            failure = self.reason,
            "disk queue writable again; resuming"
        );
    }
}

/// The disk queue failed to write or delete records; it is not writable until it recovers.
pub struct QueueDiskError<'a> {
    pub records: usize,
    /// What it means for the records.
    pub consequence: &'a str,
    pub error: &'a dyn Display,
    /// The first failure of an episode (the retries of one episode are only counted).
    pub first: bool,
}

impl QueueDiskError<'_> {
    pub fn emit(self) {
        metrics().queue_disk_errors.inc();
        if self.first {
            error!(
                records = self.records,
                "disk queue: {}: {}; new records are held back or dropped by the full policy until writing works again (retried every second)",
                self.consequence,
                self.error
            );
        }
    }
}

/// A configuration reload: applied, or rejected with the running configuration kept.
pub struct ConfigReload<'a> {
    /// Where the configuration came from: a file's path, or ThingsBoard.
    pub source: &'a dyn std::fmt::Display,
    pub outcome: Result<ReloadChanges<'a>, &'a str>,
}

/// What an applied reload changed, by device name, and the settings that wait for a restart.
pub struct ReloadChanges<'a> {
    pub added: &'a [String],
    pub removed: &'a [String],
    pub changed: &'a [String],
    pub needs_restart: &'a [&'static str],
}

impl ConfigReload<'_> {
    pub fn emit(self) {
        let result = match &self.outcome {
            Ok(_) => ReloadResult::Applied,
            Err(_) => ReloadResult::Rejected,
        };
        metrics()
            .config_reloads
            .with_label_values(&[result.label()])
            .inc();
        match self.outcome {
            Ok(summary) => {
                info!(
                    source = %self.source,
                    added = ?summary.added,
                    removed = ?summary.removed,
                    changed = ?summary.changed,
                    "configuration reloaded"
                );
                if !summary.needs_restart.is_empty() {
                    warn!(keys = ?summary.needs_restart, "these settings changed but take effect only after a restart");
                }
            }
            Err(reason) => error!(
                source = %self.source,
                "configuration reload rejected, keeping the running one: {reason}"
            ),
        }
    }
}

/// An attribute request's life: sent to ThingsBoard, answered, or given up.
pub struct AttributeRequestEvent<'a> {
    pub outcome: AttributeRequestOutcome,
    pub id: u64,
    pub device: &'a str,
}

impl AttributeRequestEvent<'_> {
    pub fn emit(self) {
        metrics()
            .attribute_requests
            .with_label_values(&[self.outcome.label()])
            .inc();
        let (id, device) = (self.id, self.device);
        match self.outcome {
            AttributeRequestOutcome::Sent => debug!(id, device, "attribute request"),
            AttributeRequestOutcome::Answered => debug!(id, device, "attribute response"),
            AttributeRequestOutcome::TimedOut => warn!(
                id,
                device, "attribute request timed out after 20 s without an answer from ThingsBoard"
            ),
        }
    }
}

/// A shared-attribute update written to a device, or not.
pub struct AttributeUpdateEvent<'a> {
    pub device: &'a str,
    pub key: &'a str,
    pub outcome: Result<std::net::SocketAddr, String>,
}

impl AttributeUpdateEvent<'_> {
    pub fn emit(self) {
        let (device, key) = (self.device, self.key);
        let label = match &self.outcome {
            Ok(peer) => {
                info!(device, key, %peer, "attribute update written to device");
                AttributeUpdateOutcome::Written
            }
            Err(error) => {
                warn!(device, key, %error, "attribute update not delivered");
                AttributeUpdateOutcome::Failed
            }
        };
        metrics()
            .attribute_updates
            .with_label_values(&[label.label()])
            .inc();
    }
}

/// An RPC request answered (or done without an answer).
pub struct RpcHandled<'a> {
    pub method: &'a str,
    pub outcome: Option<&'a connector_core::downlink::rpc::RpcOutcome>,
}

impl RpcHandled<'_> {
    pub fn emit(self) {
        use connector_core::downlink::rpc::RpcOutcome;
        let label = match self.outcome {
            Some(RpcOutcome::Error(_)) => RpcOutcomeLabel::Error,
            _ => RpcOutcomeLabel::Ok,
        };
        metrics()
            .rpc_requests
            .with_label_values(&[label.label()])
            .inc();
        debug!(method = self.method, outcome = ?self.outcome, "RPC handled");
    }
}

/// Creates every labelled series at zero, so that rates and alerts see a series before the
/// first event (an absent series is not a zero one in Prometheus).
pub fn initialize_series() {
    let m = metrics();
    for reason in DropReason::ALL {
        m.dropped.with_label_values(&[reason.label()]);
    }
    for reason in RejectReason::ALL {
        m.connections_rejected.with_label_values(&[reason.label()]);
    }
    for reason in CloseReason::ALL {
        m.connections_closed.with_label_values(&[reason.label()]);
    }
    for result in ReloadResult::ALL {
        m.config_reloads.with_label_values(&[result.label()]);
    }
    for outcome in AttributeRequestOutcome::ALL {
        m.attribute_requests.with_label_values(&[outcome.label()]);
    }
    for outcome in AttributeUpdateOutcome::ALL {
        m.attribute_updates.with_label_values(&[outcome.label()]);
    }
    for outcome in RpcOutcomeLabel::ALL {
        m.rpc_requests.with_label_values(&[outcome.label()]);
    }
    for failure in crate::thingsboard::link::ConnectFailure::ALL {
        m.mqtt_connect_failures
            .with_label_values(&[failure.label()]);
    }
}

fn count_drop(reason: DropReason, count: usize) {
    if count > 0 {
        metrics()
            .dropped
            .with_label_values(&[reason.label()])
            .inc_by(count as u64);
    }
}

/// Warnings of one kind (and one peer) are logged at most once per this interval.
pub const WARN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs a warning at most once per `key` and [`WARN_INTERVAL`], saying how many were suppressed
/// since, so that a flood of bad input or a full queue cannot flood the log. Keys name the kind
/// and, for device-side events, the peer (`"limit:10.0.0.7"`); counters are kept by metrics.
pub fn warn_throttled(key: &str, message: std::fmt::Arguments<'_>) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    static LAST: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);
    let now = Instant::now();
    let suppressed = {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = last.get_or_insert_with(HashMap::new);
        if last.len() > 4096 {
            last.retain(|_, (at, _)| now.duration_since(*at) < WARN_INTERVAL);
        }
        match last.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < WARN_INTERVAL => {
                *suppressed += 1;
                return;
            }
            Some((at, suppressed)) => {
                *at = now;
                std::mem::take(suppressed)
            }
            None => {
                last.insert(key.to_owned(), (now, 0));
                0
            }
        }
    };
    if suppressed > 0 {
        tracing::warn!(suppressed, "{message}");
    } else {
        tracing::warn!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every label the connector can emit is documented with its metric.
    #[test]
    fn every_label_is_documented() {
        let docs = include_str!("../../docs/observability.md");
        let row = |metric: &str| {
            docs.lines()
                .find(|line| line.starts_with(&format!("| `{metric}`")))
                .unwrap_or_else(|| panic!("docs/observability.md has no row for {metric}"))
        };
        let check = |metric: &str, labels: &[&str]| {
            let row = row(metric);
            for label in labels {
                assert!(
                    row.contains(&format!("`{label}`")),
                    "{metric}: label {label} is not documented"
                );
            }
        };
        check(
            "dropped_total",
            &DropReason::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "connections_rejected_total",
            &RejectReason::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "connections_closed_total",
            &CloseReason::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "config_reloads_total",
            &ReloadResult::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "attribute_requests_total",
            &AttributeRequestOutcome::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "attribute_updates_total",
            &AttributeUpdateOutcome::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "mqtt_connect_failures_total",
            &crate::thingsboard::link::ConnectFailure::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
        check(
            "rpc_requests_total",
            &RpcOutcomeLabel::ALL
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn every_series_exists_before_its_first_event() {
        initialize_series();
        let text = metrics().render();
        for reason in DropReason::ALL {
            let series = format!(
                "socket_connector_dropped_total{{reason=\"{}\"}}",
                reason.label()
            );
            assert!(text.contains(&series), "{series} missing");
        }
        assert!(text.contains("socket_connector_rpc_requests_total{outcome=\"error\"}"));
    }

    #[test]
    fn a_frame_error_counts_under_its_reason() {
        use connector_core::framing::FrameError;
        let before =
            |reason: DropReason| metrics().dropped.with_label_values(&[reason.label()]).get();
        let (long, bad) = (
            before(DropReason::FrameTooLong),
            before(DropReason::BadLengthField),
        );
        FrameRejected {
            error: &FrameError::BadLength { length: -3 },
            peer: "127.0.0.1:1",
            log: false,
        }
        .emit();
        assert_eq!(before(DropReason::BadLengthField), bad + 1);
        assert_eq!(before(DropReason::FrameTooLong), long);
    }
}
