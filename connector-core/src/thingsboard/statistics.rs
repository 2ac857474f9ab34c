//! The gateway statistics ThingsBoard's gateway dashboard plots, in the shapes gateway 3.8.5 sends
//! them (its `StatisticsService`), built without IO from readings the caller takes: once after
//! start the machine's totals as client attributes, then every period one telemetry message of
//! the gateway device with `machineStats`, `serviceStats` and `connectorsStats`. Counts are of the
//! period, as the gateway clears its counters after each send.

use serde_json::{json, Value};

/// What the machine and the process look like now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineReadings {
    pub cpu_count: usize,
    /// The 15-minute load average.
    pub load_15: f64,
    pub memory_total: u64,
    pub memory_available: u64,
    pub disk_total: u64,
    pub disk_free: u64,
    /// CPU of this process since the previous reading, in % of one core.
    pub process_cpu_percent: f64,
    pub process_resident: u64,
}

/// What the connector did during the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodCounts {
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Every MQTT message published to ThingsBoard.
    pub messages_sent: u64,
    /// Of those, the gateway-API data publishes (telemetry and attributes of devices).
    pub data_messages_sent: u64,
    /// Records waiting in the queue now.
    pub queued_records: u64,
    /// ERROR records the connector logged.
    pub errors: u64,
}

/// psutil's `bytes2human` as the gateway formats sizes: `7.8G`, `512.0M`, `12B`.
pub fn bytes2human(bytes: u64) -> String {
    const SYMBOLS: [&str; 8] = ["K", "M", "G", "T", "P", "E", "Z", "Y"];
    for (index, symbol) in SYMBOLS.iter().enumerate().rev() {
        let prefix = 1u128 << ((index + 1) * 10);
        if u128::from(bytes) >= prefix {
            return format!("{:.1}{symbol}", bytes as f64 / prefix as f64);
        }
    }
    format!("{bytes}B")
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 * 100.0 / whole as f64
}

/// The client attributes sent once: `{"totalMemory": "7.8G", "totalDisk": "...", "cpuCount": 2}`.
pub fn machine_attributes(machine: &MachineReadings) -> Value {
    json!({
        "totalMemory": bytes2human(machine.memory_total),
        "totalDisk": bytes2human(machine.disk_total),
        "cpuCount": machine.cpu_count,
    })
}

/// The periodic telemetry. Key names and value units are the gateway's, including its
/// `freeMemory`, which is the percentage of memory in use (psutil's `virtual_memory().percent`).
pub fn statistics_telemetry(
    connector_name: &str,
    machine: &MachineReadings,
    counts: &PeriodCounts,
) -> Value {
    let used_memory = machine
        .memory_total
        .saturating_sub(machine.memory_available);
    let used_disk = machine.disk_total.saturating_sub(machine.disk_free);
    json!({
        "machineStats": {
            "totalCpuUsage": round(machine.load_15 / machine.cpu_count.max(1) as f64 * 100.0, 2),
            "diskUsage": round(percent(used_disk, machine.disk_total), 1),
            "freeMemory": round(percent(used_memory, machine.memory_total), 1),
            "freeDisk": bytes2human(machine.disk_free),
            "gwProcessCpuUsage": round(machine.process_cpu_percent, 1),
            "gwMemory": round(percent(machine.process_resident, machine.memory_total), 1),
            "msgsSentToPlatform": counts.messages_sent,
        },
        "serviceStats": {
            "storageMsgCount": counts.queued_records,
            "platformMsgPushed": counts.data_messages_sent,
        },
        "connectorsStats": {
            connector_name: {
                "connectorMsgsReceived": counts.frames_received,
                "connectorBytesReceived": counts.bytes_received,
                "connectorsErrors": counts.errors,
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_psutil() {
        assert_eq!(bytes2human(0), "0B");
        assert_eq!(bytes2human(1023), "1023B");
        assert_eq!(bytes2human(1024), "1.0K");
        assert_eq!(bytes2human(8_200_000_000), "7.6G");
        assert_eq!(bytes2human(u64::MAX), "16.0E");
    }

    #[test]
    fn the_periodic_message_has_the_gateways_shape() {
        let machine = MachineReadings {
            cpu_count: 2,
            load_15: 0.5,
            memory_total: 1000,
            memory_available: 250,
            disk_total: 2048,
            disk_free: 1024,
            process_cpu_percent: 12.345,
            process_resident: 100,
        };
        let counts = PeriodCounts {
            frames_received: 3,
            bytes_received: 12,
            messages_sent: 5,
            data_messages_sent: 2,
            queued_records: 7,
            errors: 1,
        };
        let message = statistics_telemetry("Socket Connector", &machine, &counts);
        assert_eq!(
            message["machineStats"],
            json!({"totalCpuUsage": 25.0, "diskUsage": 50.0, "freeMemory": 75.0, "freeDisk": "1.0K",
                   "gwProcessCpuUsage": 12.3, "gwMemory": 10.0, "msgsSentToPlatform": 5})
        );
        assert_eq!(
            message["serviceStats"],
            json!({"storageMsgCount": 7, "platformMsgPushed": 2})
        );
        assert_eq!(
            message["connectorsStats"]["Socket Connector"],
            json!({"connectorMsgsReceived": 3, "connectorBytesReceived": 12, "connectorsErrors": 1})
        );
        assert_eq!(
            machine_attributes(&machine),
            json!({"totalMemory": "1000B", "totalDisk": "2.0K", "cpuCount": 2})
        );
    }
}
