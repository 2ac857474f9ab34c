//! Sends the connector's remote-log records (`<name>_LOGS`) and its error count
//! (`<name>_ERRORS_COUNT`) as telemetry of the gateway device, as the ThingsBoard gateway does.
//! Bounded everywhere: at most 20 records per publish, at most 10 publishes a second, and a full
//! MQTT queue drops log batches rather than delaying device data.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::sync::{mpsc::error::TryRecvError, watch};
use tracing::warn;

use super::Publisher;
use crate::clock::now_ms;
use crate::events::RemoteLogDropped;
use crate::logging::remote::{RemoteLogs, RemoteRecord};
use connector_core::thingsboard::api::topic;

const RECORDS_PER_BATCH: usize = 20;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
const ERRORS_INTERVAL: Duration = Duration::from_secs(5);
const ERRORS_WINDOW: Duration = Duration::from_secs(60);

pub async fn run(
    publisher: Publisher,
    qos: QoS,
    connector_name: Arc<str>,
    max_payload: usize,
    mut logs: RemoteLogs,
    mut stop: watch::Receiver<bool>,
) {
    let logs_key = format!("{connector_name}_LOGS");
    let errors_key = format!("{connector_name}_ERRORS_COUNT");
    let mut batches = tokio::time::interval(BATCH_INTERVAL);
    let mut error_reports = tokio::time::interval(ERRORS_INTERVAL);
    let mut window = tokio::time::interval(ERRORS_WINDOW);
    let mut window_start = 0u64;
    let mut last_reported = 0u64;
    let mut last_dropped = 0u64;
    let mut carry = None;
    loop {
        tokio::select! {
            _ = batches.tick() => {
                let batch = next_batch(&mut logs, &mut carry, &logs_key, max_payload);
                let records = batch.len();
                if records > 0 && !publisher.try_publish(topic::GATEWAY_TELEMETRY, qos, Value::Array(batch).to_string()) {
                    RemoteLogDropped { records }.emit();
                }
            }
            _ = error_reports.tick() => {
                let errors = logs.counters.errors.load(Ordering::Relaxed).saturating_sub(window_start);
                if errors != last_reported {
                    let payload = json!([{"ts": now_ms(), "values": {&errors_key: errors}}]);
                    if publisher.try_publish(topic::GATEWAY_TELEMETRY, qos, payload.to_string()) {
                        last_reported = errors;
                    }
                }
                let dropped = RemoteLogDropped::total();
                if dropped > last_dropped {
                    warn!(dropped = dropped - last_dropped, "remote log records dropped: more logs than ThingsBoard is sent");
                    last_dropped = dropped;
                }
            }
            _ = window.tick() => window_start = logs.counters.errors.load(Ordering::Relaxed),
            _ = crate::stop::stopped(&mut stop) => break,
        }
    }
}

/// Up to 20 queued records as `[{"ts":..,"values":{"<name>_LOGS":"..."}}]`, below `max_payload`;
/// a record that does not fit waits in `carry` for the next batch.
fn next_batch(
    logs: &mut RemoteLogs,
    carry: &mut Option<Value>,
    key: &str,
    max_payload: usize,
) -> Vec<Value> {
    let records = &mut logs.records;
    let mut batch = Vec::new();
    let mut size = 2;
    while batch.len() < RECORDS_PER_BATCH {
        let entry = match carry.take() {
            Some(entry) => entry,
            None => match records.try_recv() {
                Ok(RemoteRecord { ts_ms, line }) => json!({"ts": ts_ms, "values": {key: line}}),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            },
        };
        let entry_size = entry.to_string().len() + 1;
        if size + entry_size > max_payload && !batch.is_empty() {
            *carry = Some(entry);
            break;
        }
        size += entry_size;
        batch.push(entry);
    }
    batch
}
