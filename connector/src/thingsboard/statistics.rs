//! Sends the gateway statistics (`connector_core::thingsboard::statistics`) every period, the
//! first right after start, as the ThingsBoard gateway does. Machine readings come from /proc and
//! statvfs of `/` (Linux; zeros where they cannot be read); counts from the connector's metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::sync::watch;
use tracing::debug;

use super::Publisher;
use crate::logging::remote::LogCounters;
use crate::metrics::{metrics, sum};
use crate::queue::Queue;
use connector_core::thingsboard::api::topic;
use connector_core::thingsboard::statistics::{
    machine_attributes, statistics_telemetry, MachineReadings, PeriodCounts,
};

/// Shortest period from `tb_gateway.json`, as the gateway enforces it.
pub const MIN_GATEWAY_PERIOD: Duration = Duration::from_secs(10);
/// The gateway's default `statsSendPeriodInSeconds`.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

pub struct StatisticsTask {
    pub publisher: Publisher,
    pub qos: QoS,
    pub connector_name: Arc<str>,
    pub period: Duration,
    pub queue: Arc<Queue>,
    pub errors: Arc<LogCounters>,
}

impl StatisticsTask {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut process = ProcessCpu::start();
        let mut last = Totals::now(&self.errors);
        let attributes = machine_attributes(&machine(&mut process));
        if !self
            .publisher
            .publish(topic::GATEWAY_ATTRIBUTES, self.qos, attributes.to_string())
            .await
        {
            return;
        }
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = crate::stop::stopped(&mut stop) => return,
            }
            let now = Totals::now(&self.errors);
            let counts = PeriodCounts {
                frames_received: now.frames - last.frames,
                bytes_received: now.bytes - last.bytes,
                messages_sent: now.messages - last.messages,
                data_messages_sent: now.data_messages - last.data_messages,
                queued_records: self.queue.depth().0,
                errors: now.errors - last.errors,
            };
            last = now;
            let message =
                statistics_telemetry(&self.connector_name, &machine(&mut process), &counts);
            // Statistics never wait for room: device data goes first.
            if !self
                .publisher
                .try_publish(topic::GATEWAY_TELEMETRY, self.qos, message.to_string())
            {
                debug!("statistics not sent: the session is busy or down");
            }
        }
    }
}

/// Counter totals since start; a period's counts are differences of two.
#[derive(Debug, Clone, Copy)]
struct Totals {
    frames: u64,
    bytes: u64,
    messages: u64,
    data_messages: u64,
    errors: u64,
}

impl Totals {
    fn now(errors: &LogCounters) -> Self {
        let m = metrics();
        let data = ["telemetry", "attributes"]
            .iter()
            .map(|topic| m.messages_published.with_label_values(&[*topic]).get())
            .sum();
        Self {
            frames: sum(&m.frames_received),
            bytes: sum(&m.received_bytes),
            messages: sum(&m.messages_published),
            data_messages: data,
            errors: errors.errors.load(Ordering::Relaxed),
        }
    }
}

/// This process's CPU time between readings.
struct ProcessCpu {
    at: Instant,
    ticks: u64,
}

impl ProcessCpu {
    fn start() -> Self {
        Self {
            at: Instant::now(),
            ticks: process_cpu_ticks(),
        }
    }

    fn percent_since_last(&mut self) -> f64 {
        let (now, ticks) = (Instant::now(), process_cpu_ticks());
        let wall = now.duration_since(self.at).as_secs_f64();
        let used = ticks.saturating_sub(self.ticks) as f64 / clock_ticks_per_second();
        self.at = now;
        self.ticks = ticks;
        if wall > 0.0 {
            used / wall * 100.0
        } else {
            0.0
        }
    }
}

fn machine(process: &mut ProcessCpu) -> MachineReadings {
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let meminfo = |key: &str| -> u64 {
        memory
            .lines()
            .find_map(|line| line.strip_prefix(key)?.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let load_15 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(0.0);
    let (disk_total, disk_free) = root_disk();
    MachineReadings {
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_15,
        memory_total: meminfo("MemTotal:"),
        memory_available: meminfo("MemAvailable:"),
        disk_total,
        disk_free,
        process_cpu_percent: process.percent_since_last(),
        process_resident: process_resident_bytes(),
    }
}

/// utime + stime of this process, in clock ticks (`/proc/self/stat` fields 14 and 15).
fn process_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Field 3 (state) is fields[0], so field 14 is fields[11].
    field(11) + field(12)
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second().max(1) as f64
}

fn process_resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

/// Total and free bytes of the file system holding `/`, as psutil's `disk_usage('/')`.
fn root_disk() -> (u64, u64) {
    match rustix::fs::statvfs("/") {
        Ok(stat) => (
            stat.f_blocks.saturating_mul(stat.f_frsize),
            stat.f_bavail.saturating_mul(stat.f_frsize),
        ),
        Err(_) => (0, 0),
    }
}
