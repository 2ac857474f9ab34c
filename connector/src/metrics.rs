//! Prometheus metrics of the connector, served on `/metrics` by the `probes` crate; counted by
//! [`crate::events`].
//!
//! Names follow Prometheus conventions (`socket_connector_` prefix, base units, `_total`
//! counters). Labels are bounded: `device` takes configured device names only, never peer
//! addresses; `topic`, `reason` and `outcome` take the fixed values documented on each metric.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    pub connections_accepted: IntCounter,
    /// `reason`: `no_matching_device`, `tls_handshake`, `max_connections`,
    /// `max_connections_per_peer`.
    pub connections_rejected: IntCounterVec,
    /// `reason`: `idle_timeout`, `frame_too_long`.
    pub connections_closed: IntCounterVec,
    pub datagrams_rejected: IntCounter,
    /// `device`.
    pub frames_received: IntCounterVec,
    /// `device`.
    pub received_bytes: IntCounterVec,
    /// `device`: values whose bytes did not decode in the device's encoding.
    pub decode_errors: IntCounterVec,
    pub datapoints_published: IntCounter,
    /// `topic`: the gateway-API topic name after `v1/gateway/` (or `gateway_telemetry`).
    pub messages_published: IntCounterVec,
    pub mqtt_connected: IntGauge,
    /// `reason`: a `ConnectFailure` label.
    pub mqtt_connect_failures: IntCounterVec,
    pub mqtt_reconnects: IntCounter,
    pub publish_latency: Histogram,
    pub publish_ack_latency: Histogram,
    pub queue_messages: IntGauge,
    pub queue_records: IntGauge,
    pub queue_bytes: IntGauge,
    pub queue_disk_errors: IntCounter,
    pub queue_max_bytes: IntGauge,
    pub queue_writable: IntGauge,
    /// `result`: `applied`, `rejected`.
    pub config_reloads: IntCounterVec,
    /// `reason`: the labels of [`crate::events::DropReason`].
    pub dropped: IntCounterVec,
    /// `outcome`: `sent`, `answered`, `timed_out`.
    pub attribute_requests: IntCounterVec,
    /// `outcome`: `written`, `failed`.
    pub attribute_updates: IntCounterVec,
    /// `outcome`: `ok`, `error`.
    pub rpc_requests: IntCounterVec,
    pub report_suppressed: IntCounter,
    pub devices_connected: IntGauge,
    pub devices_evicted: IntCounter,
    pub worker_wakeups: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// Latencies from half a millisecond to ten seconds.
fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ]))
    .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let publish_latency = histogram(
            &r,
            "socket_connector_publish_latency_seconds",
            "Time from reading a device message to queueing its datapoints for ThingsBoard.",
        );
        let publish_ack_latency = histogram(
            &r,
            "socket_connector_publish_ack_latency_seconds",
            "Time from sending a queued publish to ThingsBoard's acknowledgement.",
        );
        Self {
            connections_open: gauge(
                &r,
                "socket_connector_connections_open",
                "Open device TCP connections.",
            ),
            connections_accepted: counter(
                &r,
                "socket_connector_connections_accepted_total",
                "Device TCP connections accepted.",
            ),
            connections_rejected: counter_vec(
                &r,
                "socket_connector_connections_rejected_total",
                "Device TCP connections closed at once, by reason.",
                "reason",
            ),
            connections_closed: counter_vec(
                &r,
                "socket_connector_connections_closed_total",
                "Device TCP connections closed by the connector because a limit was hit, by reason.",
                "reason",
            ),
            datagrams_rejected: counter(
                &r,
                "socket_connector_datagrams_rejected_total",
                "UDP datagrams dropped because no device's address filter matches the sender.",
            ),
            frames_received: counter_vec(
                &r,
                "socket_connector_frames_received_total",
                "Device messages received, per device.",
                "device",
            ),
            received_bytes: counter_vec(
                &r,
                "socket_connector_received_bytes_total",
                "Device message bytes received, per device.",
                "device",
            ),
            decode_errors: counter_vec(
                &r,
                "socket_connector_decode_errors_total",
                "Values whose bytes did not decode in the device's encoding, per device.",
                "device",
            ),
            datapoints_published: counter(
                &r,
                "socket_connector_datapoints_published_total",
                "Telemetry and attribute datapoints handed to the MQTT client.",
            ),
            messages_published: counter_vec(
                &r,
                "socket_connector_mqtt_messages_published_total",
                "MQTT messages published, by gateway-API topic.",
                "topic",
            ),
            mqtt_connected: gauge(
                &r,
                "socket_connector_mqtt_connected",
                "1 while the MQTT session to ThingsBoard is up.",
            ),
            mqtt_connect_failures: counter_vec(
                &r,
                "socket_connector_mqtt_connect_failures_total",
                "Failed attempts to connect to ThingsBoard, by reason.",
                "reason",
            ),
            mqtt_reconnects: counter(
                &r,
                "socket_connector_mqtt_reconnects_total",
                "MQTT sessions re-established after a loss.",
            ),
            publish_latency,
            publish_ack_latency,
            queue_messages: gauge(
                &r,
                "socket_connector_queue_messages",
                "Converted messages waiting to be published.",
            ),
            queue_records: gauge(
                &r,
                "socket_connector_queue_records",
                "Publishes in the uplink queue, not yet acknowledged by ThingsBoard.",
            ),
            queue_bytes: gauge(
                &r,
                "socket_connector_queue_bytes",
                "Bytes in the uplink queue not yet acknowledged by ThingsBoard, as counted against its capacity.",
            ),
            queue_disk_errors: counter(
                &r,
                "socket_connector_queue_disk_errors_total",
                "Failed writes of the disk queue (each makes it unwritable until it recovers).",
            ),
            queue_max_bytes: gauge(
                &r,
                "socket_connector_queue_max_bytes",
                "Capacity of the uplink queue in bytes (--queue-max-bytes).",
            ),
            queue_writable: gauge(
                &r,
                "socket_connector_queue_writable",
                "0 while the disk queue cannot be written (disk full, I/O error), else 1.",
            ),
            config_reloads: counter_vec(
                &r,
                "socket_connector_config_reloads_total",
                "Configuration reloads, by result.",
                "result",
            ),
            dropped: counter_vec(
                &r,
                "socket_connector_dropped_total",
                "Items dropped, by reason.",
                "reason",
            ),
            attribute_requests: counter_vec(
                &r,
                "socket_connector_attribute_requests_total",
                "Attribute requests, by outcome.",
                "outcome",
            ),
            attribute_updates: counter_vec(
                &r,
                "socket_connector_attribute_updates_total",
                "Shared-attribute updates for devices, by outcome.",
                "outcome",
            ),
            rpc_requests: counter_vec(
                &r,
                "socket_connector_rpc_requests_total",
                "RPC requests, by outcome.",
                "outcome",
            ),
            report_suppressed: counter(
                &r,
                "socket_connector_report_strategy_suppressed_total",
                "Datapoints held back by a report strategy.",
            ),
            devices_connected: gauge(
                &r,
                "socket_connector_devices_connected",
                "Devices connected in ThingsBoard (announced with v1/gateway/connect).",
            ),
            devices_evicted: counter(
                &r,
                "socket_connector_devices_evicted_total",
                "Devices disconnected and forgotten because more than --max-devices were connected.",
            ),
            worker_wakeups: counter(
                &r,
                "socket_connector_worker_wakeups_total",
                "Times a runtime worker woke from waiting for IO or timers; frames received per wake-up show what read coalescing gathers.",
            ),
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// One configured device's series of the per-device metrics.
#[derive(Debug, Clone)]
pub struct DeviceCounters {
    pub frames: IntCounter,
    pub bytes: IntCounter,
    pub decode_errors: IntCounter,
}

impl DeviceCounters {
    pub fn new(device: &str) -> Self {
        let m = metrics();
        Self {
            frames: m.frames_received.with_label_values(&[device]),
            bytes: m.received_bytes.with_label_values(&[device]),
            decode_errors: m.decode_errors.with_label_values(&[device]),
        }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The total of a counter over all its label values.
pub fn sum(counter: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    counter
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_conventional_names() {
        metrics()
            .frames_received
            .with_label_values(&["Device A"])
            .inc();
        let text = metrics().render();
        assert!(text.contains("socket_connector_frames_received_total{device=\"Device A\"}"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("socket_connector_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }
}
