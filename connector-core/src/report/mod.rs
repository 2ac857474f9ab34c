//! ThingsBoard's report strategies: which datapoints are forwarded, which are only remembered,
//! and which are re-sent periodically.
//!
//! Pure: the caller passes the time, so tests drive a clock by hand.

use indexmap::IndexMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::{ReportStrategy, ReportStrategyKind};
use crate::convert::{ConvertedData, Datapoint, DeviceIdentity};

/// ThingsBoard re-sends when `now - lastReport + 50 ms >= period`.
const PERIOD_TOLERANCE_MS: i64 = 50;
/// ThingsBoard considers floats equal within this tolerance.
const FLOAT_TOLERANCE: f64 = 0.001;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Section {
    Telemetry,
    Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RecordKey {
    device: Arc<str>,
    section: Section,
    key: Arc<str>,
}

#[derive(Debug)]
struct Record {
    device: Arc<DeviceIdentity>,
    value: Value,
    strategy: ReportStrategy,
    last_seen_ms: i64,
    last_report_ms: i64,
}

impl Record {
    fn expired(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > self.strategy.ttl_ms as i64
    }

    fn next_report_ms(&self) -> i64 {
        self.last_report_ms
            .saturating_add(self.strategy.period_ms as i64)
            .saturating_sub(PERIOD_TOLERANCE_MS)
    }
}

/// What the report strategies decided for one message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub forwarded: usize,
    pub suppressed: usize,
}

/// The remembered values of every (device, key) with a strategy other than ON_RECEIVED.
#[derive(Debug)]
pub struct ReportFilter {
    /// The gateway's strategy (`thingsboard.reportStrategy`), the last level of the cascade.
    global: ReportStrategy,
    records: IndexMap<RecordKey, Record>,
    next_due_ms: Option<i64>,
}

impl ReportFilter {
    pub fn new(global: ReportStrategy) -> Self {
        Self {
            global,
            records: IndexMap::new(),
            next_due_ms: None,
        }
    }

    /// Keeps the datapoints of `data` that must be sent now and remembers the rest.
    pub fn filter(&mut self, data: &mut ConvertedData, now_ms: i64) -> Decision {
        let mut decision = Decision::default();
        let device = data.device.clone();
        for (section, points) in [
            (Section::Telemetry, &mut data.telemetry),
            (Section::Attributes, &mut data.attributes),
        ] {
            points.retain(|point| {
                let forward = self.decide(&device, section, point, now_ms);
                if forward {
                    decision.forwarded += 1;
                } else {
                    decision.suppressed += 1;
                }
                forward
            });
        }
        decision
    }

    fn decide(
        &mut self,
        device: &Arc<DeviceIdentity>,
        section: Section,
        point: &Datapoint,
        now_ms: i64,
    ) -> bool {
        let strategy = ReportStrategy::effective(point.strategy, self.global);
        if strategy.kind == ReportStrategyKind::OnReceived {
            return true;
        }
        let key = RecordKey {
            device: device.name.clone(),
            section,
            key: point.key.clone(),
        };
        match self.records.get_mut(&key) {
            Some(record) if record.strategy == strategy && !record.expired(now_ms) => {
                let changed = values_differ(&record.value, &point.value);
                record.last_seen_ms = now_ms;
                if changed {
                    record.value = point.value.clone();
                }
                match strategy.kind {
                    ReportStrategyKind::OnChange | ReportStrategyKind::OnChangeOrReportPeriod => {
                        changed
                    }
                    _ => false,
                }
            }
            _ => {
                let record = Record {
                    device: device.clone(),
                    value: point.value.clone(),
                    strategy,
                    last_seen_ms: now_ms,
                    last_report_ms: now_ms,
                };
                if strategy.is_periodic() {
                    let due = record.next_report_ms();
                    self.next_due_ms = Some(self.next_due_ms.map_or(due, |d| d.min(due)));
                }
                self.records.insert(key, record);
                true
            }
        }
    }

    /// When [`Self::due`] next has something to send.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.next_due_ms
    }

    /// The periodic re-sends due at `now_ms`, one message per device, stamped with `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Vec<ConvertedData> {
        if self.next_due_ms.is_none_or(|due| due > now_ms) {
            return Vec::new();
        }
        let mut out: Vec<ConvertedData> = Vec::new();
        let mut next_due: Option<i64> = None;
        for (key, record) in self.records.iter_mut() {
            if !record.strategy.is_periodic() || record.expired(now_ms) {
                continue;
            }
            if record.next_report_ms() <= now_ms {
                record.last_report_ms = now_ms;
                record.last_seen_ms = now_ms;
                let point = Datapoint {
                    key: key.key.clone(),
                    value: record.value.clone(),
                    strategy: Some(record.strategy),
                };
                let message = match out.iter_mut().find(|m| m.device.name == key.device) {
                    Some(message) => message,
                    None => {
                        out.push(ConvertedData {
                            device: record.device.clone(),
                            ts_ms: now_ms,
                            telemetry: Vec::new(),
                            attributes: Vec::new(),
                            decode_errors: 0,
                        });
                        out.last_mut().expect("just pushed")
                    }
                };
                match key.section {
                    Section::Telemetry => message.telemetry.push(point),
                    Section::Attributes => message.attributes.push(point),
                }
            }
            let due = record.next_report_ms();
            next_due = Some(next_due.map_or(due, |d| d.min(due)));
        }
        self.next_due_ms = next_due;
        out
    }

    /// Forgets values whose ttl has passed, so memory follows the live key set.
    pub fn sweep(&mut self, now_ms: i64) {
        self.records.retain(|_, record| !record.expired(now_ms));
    }

    /// Forgets what is remembered of these devices.
    pub fn forget_devices(&mut self, devices: &std::collections::HashSet<Arc<str>>) {
        self.records.retain(|key, _| !devices.contains(&key.device));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn values_differ(old: &Value, new: &Value) -> bool {
    match (old, new) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() > FLOAT_TOLERANCE,
                _ => a != b,
            }
        }
        _ => old != new,
    }
}

#[cfg(test)]
mod tests;
