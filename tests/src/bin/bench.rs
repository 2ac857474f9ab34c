//! `bench`: end-to-end benchmark of the socket connector on one machine. Starts Mosquitto, the
//! release `socket-connector` with the load generator's `socket.json` (QoS 1), a QoS 1 subscriber
//! on `v1/gateway/telemetry` that parses every payload, and the load generator
//! (`socket_connector::simulate`), then prints ONE JSON line: offered and delivered rates,
//! end-to-end latency, the connector's CPU and peak RSS, lost and duplicate frames.
//!
//! ```sh
//! cargo run --release -p e2e-tests --bin bench -- --rate 10000 --connections 1 --duration 10
//! cargo run --release -p e2e-tests --bin bench -- --startup
//! cargo run --release -p e2e-tests --bin bench -- --subscriber-only --rate 100000 --duration 10
//! (ulimit -n 20000; cargo run --release -p e2e-tests --bin bench -- --idle --connections 10000 --duration 15)
//! ```
//!
//! See docs/benchmarks.md for what each number means.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use e2e_tests::connector::ConnectorProcess;
use e2e_tests::peer::mqtt_client;
use e2e_tests::Mosquitto;
use rumqttc::{Event, Incoming, QoS};
use serde::Deserialize;
use serde_json::{json, Value};
use socket_connector::simulate::{self, LoadOptions, Progress, Protocol};

const USAGE: &str = "\
bench: end-to-end benchmark of socket-connector (Mosquitto, connector, subscriber, load generator)

Modes (default: throughput and latency):
  --startup             time from spawning the connector to the first datapoint at the subscriber
  --subscriber-only     no connector: a publisher sends gateway-API telemetry straight to
                        Mosquitto at --rate frames/s (measures the measuring side alone)
  --idle                --connections TCP connections send one frame each and stay open for
                        --duration seconds; reports the connector's RSS (raise ulimit -n first)

Options:
  --protocol tcp|udp        device socket (default tcp)
  --connections N           connections or UDP sockets (default 1)
  --rate N                  total frames/s, 0 = as fast as possible (default 10000)
  --duration S              seconds of load (default 10, at most 600)
  --count N                 stop after N frames in total
  --batch N                 frames per write/datagram (default 64 TCP, 40 UDP)
  --buffer-size N           socket.bufferSize (default 1024)
  --qos 0|1                 connector's --qos (default 1)
  --max-payload-size N      connector's --max-payload-size (default 8196)
  --session-limits          answer getSessionLimits like ThingsBoard (payloads up to 52428 bytes)
  --unframed                ThingsBoard's config: no framing (each read is one message; use
                            --batch 1) and an attribute next to the three telemetry keys
  --generator-threads N     worker threads of the load generator (default 1)
  --drain-timeout S         most seconds to wait for frames after the load ends (default 60)
  --connect-rate N          new connections per second at most (default 0: unpaced, 64 in flight)
  --connector-arg ARG       extra argument for `socket-connector run`, repeatable
                            (e.g. --connector-arg --queue-directory --connector-arg /tmp/q)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Throughput,
    Startup,
    SubscriberOnly,
    Idle,
}

#[derive(Debug, Clone)]
struct Options {
    mode: Mode,
    protocol: Protocol,
    connections: usize,
    rate: u64,
    duration: f64,
    count: Option<u64>,
    batch: Option<usize>,
    buffer_size: usize,
    qos: u8,
    max_payload: usize,
    session_limits: bool,
    /// ThingsBoard's way: no framing, an attribute next to the telemetry.
    unframed: bool,
    generator_threads: usize,
    drain_timeout: f64,
    connect_rate: u64,
    /// Passed to `socket-connector run` as they are (e.g. the queue flags).
    extra_connector_args: Vec<String>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Self>> {
        let mut options = Self {
            mode: Mode::Throughput,
            protocol: Protocol::Tcp,
            connections: 1,
            rate: 10_000,
            duration: 10.0,
            count: None,
            batch: None,
            buffer_size: 1024,
            qos: 1,
            max_payload: 8196,
            session_limits: false,
            unframed: false,
            generator_threads: 1,
            drain_timeout: 60.0,
            connect_rate: 0,
            extra_connector_args: Vec::new(),
        };
        fn value<T: std::str::FromStr>(
            flag: &str,
            args: &mut impl Iterator<Item = String>,
        ) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            let text = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            text.parse()
                .map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
        }
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--startup" => options.mode = Mode::Startup,
                "--subscriber-only" => options.mode = Mode::SubscriberOnly,
                "--idle" => options.mode = Mode::Idle,
                "--session-limits" => options.session_limits = true,
                "--unframed" => options.unframed = true,
                "--protocol" => {
                    options.protocol = match value::<String>(&arg, &mut args)?.as_str() {
                        "tcp" | "TCP" => Protocol::Tcp,
                        "udp" | "UDP" => Protocol::Udp,
                        other => bail!("--protocol {other}: expected tcp or udp"),
                    }
                }
                "--connections" => options.connections = value(&arg, &mut args)?,
                "--rate" => options.rate = value(&arg, &mut args)?,
                "--duration" => options.duration = value(&arg, &mut args)?,
                "--count" => options.count = Some(value(&arg, &mut args)?),
                "--batch" => options.batch = Some(value(&arg, &mut args)?),
                "--buffer-size" => options.buffer_size = value(&arg, &mut args)?,
                "--qos" => options.qos = value(&arg, &mut args)?,
                "--max-payload-size" => options.max_payload = value(&arg, &mut args)?,
                "--generator-threads" => options.generator_threads = value(&arg, &mut args)?,
                "--drain-timeout" => options.drain_timeout = value(&arg, &mut args)?,
                "--connect-rate" => options.connect_rate = value(&arg, &mut args)?,
                "--connector-arg" => options.extra_connector_args.push(value(&arg, &mut args)?),
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        if !(options.duration > 0.0 && options.duration <= 600.0) {
            bail!("--duration must be in (0, 600] seconds");
        }
        if !(0.0..=600.0).contains(&options.drain_timeout) {
            bail!("--drain-timeout must be in [0, 600] seconds");
        }
        if options.connections == 0 || options.connections > 60_000 {
            bail!("--connections must be in 1..=60000");
        }
        if options.qos > 1 {
            bail!("--qos must be 0 or 1");
        }
        Ok(Some(options))
    }

    fn load(&self, target: SocketAddr) -> LoadOptions {
        let mut load = LoadOptions::new(
            target,
            self.connections,
            self.rate,
            Duration::from_secs_f64(self.duration),
        );
        load.protocol = self.protocol;
        load.count = self.count;
        load.batch = self.batch;
        load.idle = self.mode == Mode::Idle;
        load.connect_rate = self.connect_rate;
        load
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    if options.mode != Mode::SubscriberOnly {
        if let Err(error) = ensure_connector_binary() {
            eprintln!("error: {error:#}");
            return ExitCode::from(1);
        }
    }
    let result = match options.mode {
        Mode::Throughput => throughput(&options),
        Mode::Startup => startup(&options),
        Mode::SubscriberOnly => subscriber_only(&options),
        Mode::Idle => idle(&options),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modes

/// Load through the connector; one JSON line of rates, latency, CPU and memory.
fn throughput(options: &Options) -> anyhow::Result<Value> {
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port(), options.session_limits)?;
    let connector = start_connector(options, broker.port(), &[])?;
    let connector_pid = connector.pid();
    let mosquitto_pid = child_pid("mosquitto");
    let mut pids = vec![connector_pid, std::process::id()];
    pids.extend(mosquitto_pid);
    let processes = pids.len();
    let (steal, machine) = (processes, processes + 1);
    let sampler = Sampler::start(pids);

    let progress = Arc::new(Progress::default());
    let load = options.load(connector.local_addr);
    let threads = options.generator_threads;
    let start = Instant::now();
    sampler.sample_now();
    let generator = {
        let progress = progress.clone();
        thread::spawn(move || simulate::run_blocking(&load, progress, threads))
    };
    let summary = generator
        .join()
        .map_err(|_| anyhow::anyhow!("load generator panicked"))??;
    let sent = summary.frames_sent;
    let drained_at = subscriber.drain(sent, options.drain_timeout);
    sampler.sample_now();
    let peak_rss = proc_status_kib(connector_pid, "VmHWM").unwrap_or(0);
    let end_rss = proc_status_kib(connector_pid, "VmRSS").unwrap_or(0);
    let stats = subscriber.stop();
    let samples = sampler.stop();
    let _ = connector.terminate();
    drop(broker);

    // The measured window: from the first write to the last frame received. Opening the
    // connections comes before it (5 s for 10,000 at 2,000/s): counted in, that phase's lighter
    // load diluted the CPU figures of fleets; it is reported on its own.
    let sending_since = progress.sending_since.get().copied().unwrap_or(start);
    let end = stats.last_received.unwrap_or(drained_at).max(sending_since);
    let window = end.duration_since(sending_since).as_secs_f64().max(1e-9);
    let cpu = |index: usize| cpu_percent(&samples, index, sending_since, end);
    let mut latencies = stats.latencies_us.clone();
    latencies.sort_unstable();
    Ok(json!({
        "mode": "throughput",
        "protocol": summary.protocol,
        "connections": summary.connections,
        "connected": summary.connected,
        "target_rate": options.rate,
        "duration_s": options.duration,
        "qos": options.qos,
        "buffer_size": options.buffer_size,
        "frames_sent": sent,
        "offered_fps": round(summary.rate, 0),
        "frames_received": stats.distinct,
        "delivered_fps": round(stats.distinct as f64 / window, 0),
        "datapoints_per_s": round(stats.datapoints as f64 / window, 0),
        "telemetry_publishes_per_s": round(stats.publishes as f64 / window, 0),
        "frames_per_telemetry_publish": round(stats.distinct as f64 / stats.publishes.max(1) as f64, 2),
        "attribute_publishes": stats.attribute_publishes,
        "latency_ms": latency_json(&latencies),
        "connector_cpu_pct": round(cpu(0), 1),
        "connector_peak_rss_mib": round(peak_rss as f64 / 1024.0, 2),
        "connector_end_rss_mib": round(end_rss as f64 / 1024.0, 2),
        "mosquitto_cpu_pct": if mosquitto_pid.is_some() { json!(round(cpu(2), 1)) } else { Value::Null },
        "bench_cpu_pct": round(cpu(1), 1),
        "other_processes_cpu_pct": round((cpu(machine) - (0..processes).map(cpu).sum::<f64>()).max(0.0), 1),
        "machine_steal_pct": round(cpu(steal), 1),
        "lost": sent.saturating_sub(stats.distinct),
        "duplicates": stats.duplicates,
        "unexpected": stats.distinct.saturating_sub(sent),
        "parse_errors": stats.parse_errors,
        "generator_errors": summary.errors,
        "generator_late_ms": latency_json(&summary.write_lateness_us),
        "window_s": round(window, 3),
        "connect_s": round(sending_since.duration_since(start).as_secs_f64(), 3),
        "connect_connector_cpu_pct": round(cpu_percent(&samples, 0, start, sending_since), 1),
    }))
}

/// Time from spawning the connector to the first datapoint at the subscriber.
fn startup(options: &Options) -> anyhow::Result<Value> {
    if options.protocol != Protocol::Tcp {
        bail!("--startup measures TCP only");
    }
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port(), options.session_limits)?;
    let port = e2e_tests::free_port();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("socket.json");
    let config = simulate::socket_json(Protocol::Tcp, port, options.buffer_size);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    let mut command = ConnectorProcess::command(&path, broker.port());
    command
        .args(connector_args(options))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let spawned = Instant::now();
    let mut child = command.spawn().context("start socket-connector")?;
    let stderr = child.stderr.take().context("stderr")?;
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[connector] {line}");
        }
    });
    // The device: connects as soon as the port accepts and sends one frame.
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = None;
    let mut connected_at = None;
    while spawned.elapsed() < Duration::from_secs(10) {
        if let Ok(mut s) = TcpStream::connect(target) {
            connected_at = Some(Instant::now());
            let mut frame = [0u8; simulate::FRAME_LEN];
            simulate::encode_frame(&mut frame, 0, simulate::now_us(), 0);
            s.write_all(&frame)?;
            stream = Some(s);
            break;
        }
        thread::sleep(Duration::from_micros(500));
    }
    let connected_at = connected_at.context("the connector's socket never accepted")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(first) = subscriber.first_received() {
            break first;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("no datapoint arrived within 10 s of the connection");
        }
        thread::sleep(Duration::from_micros(200));
    };
    let rss = proc_status_kib(child.id(), "VmHWM").unwrap_or(0);
    drop(stream);
    let _ = child.kill();
    let _ = child.wait();
    let stats = subscriber.stop();
    drop(broker);
    Ok(json!({
        "mode": "startup",
        "socket_accepting_ms": round(connected_at.duration_since(spawned).as_secs_f64() * 1000.0, 2),
        "first_datapoint_ms": round(first.duration_since(spawned).as_secs_f64() * 1000.0, 2),
        "connector_peak_rss_mib": round(rss as f64 / 1024.0, 2),
        "frames_received": stats.distinct,
    }))
}

/// The measuring side alone: gateway-API telemetry published straight to Mosquitto.
fn subscriber_only(options: &Options) -> anyhow::Result<Value> {
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port(), false)?;
    let mosquitto_pid = child_pid("mosquitto");
    let mut pids = vec![std::process::id()];
    pids.extend(mosquitto_pid);
    let sampler = Sampler::start(pids);
    let start = Instant::now();
    sampler.sample_now();
    let published = {
        let options = options.clone();
        let port = broker.port();
        thread::spawn(move || publish_directly(&options, port))
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??
    };
    let drained_at = subscriber.drain(published.frames, options.drain_timeout);
    sampler.sample_now();
    let stats = subscriber.stop();
    let samples = sampler.stop();
    drop(broker);
    let end = stats.last_received.unwrap_or(drained_at).max(start);
    let window = end.duration_since(start).as_secs_f64().max(1e-9);
    let mut latencies = stats.latencies_us.clone();
    latencies.sort_unstable();
    Ok(json!({
        "mode": "subscriber-only",
        "target_rate": options.rate,
        "duration_s": options.duration,
        "frames_sent": published.frames,
        "offered_fps": round(published.frames as f64 / published.elapsed_s.max(1e-9), 0),
        "publishes_sent": published.publishes,
        "frames_received": stats.distinct,
        "delivered_fps": round(stats.distinct as f64 / window, 0),
        "datapoints_per_s": round(stats.datapoints as f64 / window, 0),
        "telemetry_publishes_per_s": round(stats.publishes as f64 / window, 0),
        "latency_ms": latency_json(&latencies),
        "mosquitto_cpu_pct": if mosquitto_pid.is_some() { json!(round(cpu_percent(&samples, 1, start, end), 1)) } else { Value::Null },
        "bench_cpu_pct": round(cpu_percent(&samples, 0, start, end), 1),
        "lost": published.frames.saturating_sub(stats.distinct),
        "duplicates": stats.duplicates,
        "parse_errors": stats.parse_errors,
    }))
}

/// Many open, silent TCP connections: the connector's memory.
fn idle(options: &Options) -> anyhow::Result<Value> {
    if options.protocol != Protocol::Tcp {
        bail!("--idle needs TCP");
    }
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port(), options.session_limits)?;
    let metrics_port = e2e_tests::free_port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let connector = start_connector(
        options,
        broker.port(),
        &["--metrics-address", &metrics_address],
    )?;
    let pid = connector.pid();
    let rss_before = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let progress = Arc::new(Progress::default());
    let load = options.load(connector.local_addr);
    let threads = options.generator_threads;
    let started = Instant::now();
    let generator = {
        let progress = progress.clone();
        thread::spawn(move || simulate::run_blocking(&load, progress, threads))
    };
    // Every connection open and its one frame delivered, then a moment to settle.
    let n = options.connections as u64;
    let hold = Duration::from_secs_f64(options.duration);
    while started.elapsed() < hold
        && (subscriber.distinct() < n || (progress.connected.load(Ordering::Relaxed) as u64) < n)
        && !generator.is_finished()
    {
        thread::sleep(Duration::from_millis(50));
    }
    let all_open_after = started.elapsed();
    thread::sleep(Duration::from_secs(1).min(hold.saturating_sub(started.elapsed())));
    let open = scrape_metric(metrics_port, "socket_connector_connections_open");
    let rss = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let peak = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    progress.stop.store(true, Ordering::Relaxed);
    let summary = generator
        .join()
        .map_err(|_| anyhow::anyhow!("load generator panicked"))??;
    let stats = subscriber.stop();
    let _ = connector.terminate();
    drop(broker);
    Ok(json!({
        "mode": "idle",
        "connections": options.connections,
        "connect_rate": options.connect_rate,
        "connected": summary.connected,
        "connections_open_metric": open,
        "frames_received": stats.distinct,
        "all_open_after_s": round(all_open_after.as_secs_f64(), 2),
        "connector_rss_before_mib": round(rss_before as f64 / 1024.0, 2),
        "connector_rss_mib": round(rss as f64 / 1024.0, 2),
        "connector_peak_rss_mib": round(peak as f64 / 1024.0, 2),
        "kib_per_connection": round((rss.saturating_sub(rss_before)) as f64 / n as f64, 2),
        "generator_errors": summary.errors,
        "first_error": summary.first_error,
    }))
}

// ---------------------------------------------------------------------------------------------
// The connector

fn connector_args(options: &Options) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--qos".into(),
        options.qos.to_string(),
        "--max-payload-size".into(),
        options.max_payload.to_string(),
        "--shutdown-grace-seconds".into(),
        "2".into(),
        "--client-id".into(),
        "bench-connector".into(),
    ];
    args.extend(options.extra_connector_args.iter().cloned());
    args
}

/// The release `socket-connector` next to this binary (built first when run by cargo), unless
/// `SOCKET_CONNECTOR_BIN` names one.
fn ensure_connector_binary() -> anyhow::Result<()> {
    if std::env::var_os("SOCKET_CONNECTOR_BIN").is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary directory")?.to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "socket-connector",
            "--bin",
            "socket-connector",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().context("run cargo build")?;
        if !status.success() {
            bail!("building socket-connector failed");
        }
    }
    let binary: PathBuf = dir.join("socket-connector");
    if !binary.exists() {
        bail!(
            "{} is missing: cargo build --release -p socket-connector, or set SOCKET_CONNECTOR_BIN",
            binary.display()
        );
    }
    // Read by the harness (e2e_tests::connector::binary); set before any thread reads it.
    std::env::set_var("SOCKET_CONNECTOR_BIN", binary);
    Ok(())
}

/// Starts the connector with the generator's `socket.json` and waits until it is connected to
/// the broker.
fn start_connector(
    options: &Options,
    broker_port: u16,
    extra: &[&str],
) -> anyhow::Result<ConnectorProcess> {
    let config = if options.unframed {
        simulate::socket_json_unframed(options.protocol, 0, options.buffer_size)
    } else {
        simulate::socket_json(options.protocol, 0, options.buffer_size)
    };
    let mut args = connector_args(options);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let connector = ConnectorProcess::start_with(&config, broker_port, &args);
    connector.wait_for_log("connected to ThingsBoard");
    if options.session_limits {
        // Let the getSessionLimits answer arrive before the load.
        thread::sleep(Duration::from_millis(300));
    }
    Ok(connector)
}

// ---------------------------------------------------------------------------------------------
// The subscriber

#[derive(Debug, Default)]
struct Stats {
    /// Bitmap of the sequence numbers seen.
    seen: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    datapoints: u64,
    publishes: u64,
    /// Publishes on `v1/gateway/attributes` (one per device announced, and the data's).
    attribute_publishes: u64,
    parse_errors: u64,
    latencies_us: Vec<u32>,
    first_received: Option<Instant>,
    last_received: Option<Instant>,
}

impl Stats {
    fn frame(&mut self, seq: u64, latency_us: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.distinct += 1;
        self.latencies_us
            .push(latency_us.min(u64::from(u32::MAX)) as u32);
    }
}

/// One entry of a gateway telemetry payload; only `values` matters here.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    values: HashMap<&'a str, &'a str>,
}

struct Subscriber {
    stats: Arc<Mutex<Stats>>,
    distinct: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Connects a QoS 1 subscriber to `v1/gateway/telemetry` and returns once subscribed.
    fn start(port: u16, session_limits: bool) -> anyhow::Result<Self> {
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let distinct: Arc<AtomicU64> = Arc::default();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let stats = stats.clone();
            let distinct = distinct.clone();
            thread::Builder::new()
                .name("subscriber".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("subscriber runtime");
                    runtime.block_on(subscribe(
                        port,
                        session_limits,
                        stats,
                        distinct,
                        ready_tx,
                        stop_rx,
                    ));
                })?
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the subscriber did not subscribe within 10 s")?;
        Ok(Self {
            stats,
            distinct,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    fn first_received(&self) -> Option<Instant> {
        self.stats.lock().unwrap().first_received
    }

    /// Waits until `expected` distinct frames arrived, nothing arrived for 3 s, or `timeout`
    /// seconds passed; returns when it stopped waiting.
    fn drain(&self, expected: u64, timeout: f64) -> Instant {
        let started = Instant::now();
        let timeout = Duration::from_secs_f64(timeout);
        let quiet = Duration::from_secs(3);
        let mut last = self.distinct();
        let mut last_change = Instant::now();
        loop {
            let now = self.distinct();
            if now >= expected || started.elapsed() >= timeout {
                return Instant::now();
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return last_change;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop(mut self) -> Stats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.stats.lock().unwrap())
    }
}

async fn subscribe(
    port: u16,
    session_limits: bool,
    stats: Arc<Mutex<Stats>>,
    distinct: Arc<AtomicU64>,
    ready: std::sync::mpsc::Sender<()>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let (client, mut event_loop) = mqtt_client(
        format!("bench-subscriber-{}", std::process::id()),
        port,
        100,
    );
    let _ = client
        .subscribe("v1/gateway/telemetry", QoS::AtLeastOnce)
        .await;
    if session_limits {
        let _ = client
            .subscribe("v1/devices/me/rpc/request/+", QoS::AtLeastOnce)
            .await;
    }
    let mut ready = Some(ready);
    let mut subacks = 0;
    let _ = client
        .subscribe("v1/gateway/attributes", QoS::AtLeastOnce)
        .await;
    let expected_subacks = if session_limits { 3 } else { 2 };
    loop {
        let event = tokio::select! {
            event = event_loop.poll() => event,
            _ = &mut stop => return,
        };
        match event {
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                subacks += 1;
                if subacks >= expected_subacks {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let received = Instant::now();
                let now_us = simulate::now_us();
                if publish.topic == "v1/gateway/telemetry" {
                    let mut stats = stats.lock().unwrap();
                    record(&mut stats, &publish.payload, now_us, received);
                    distinct.store(stats.distinct, Ordering::Relaxed);
                } else if publish.topic == "v1/gateway/attributes" {
                    stats.lock().unwrap().attribute_publishes += 1;
                } else {
                    e2e_tests::peer::answer_session_limits(
                        &client,
                        &publish.topic,
                        &publish.payload,
                    );
                }
            }
            Ok(_) => {}
            Err(error) => {
                eprintln!("[subscriber] {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts the frames and datapoints of one telemetry payload.
fn record(stats: &mut Stats, payload: &[u8], now_us: u64, received: Instant) {
    stats.publishes += 1;
    stats.first_received.get_or_insert(received);
    stats.last_received = Some(received);
    match serde_json::from_slice::<HashMap<&str, Vec<Entry>>>(payload) {
        Ok(devices) => {
            for entries in devices.values() {
                for entry in entries {
                    record_entry(stats, now_us, entry.values.len(), |key| {
                        entry.values.get(key).map(|v| Cow::Borrowed(v.as_bytes()))
                    });
                }
            }
        }
        Err(_) => {
            // Escaped strings or typed values: the slow, general way.
            let Ok(Value::Object(devices)) = serde_json::from_slice::<Value>(payload) else {
                stats.parse_errors += 1;
                return;
            };
            for entries in devices.values() {
                for entry in entries.as_array().into_iter().flatten() {
                    let values = entry["values"].as_object();
                    let count = values.map_or(0, |v| v.len());
                    record_entry(stats, now_us, count, |key| {
                        values?.get(key).map(|v| match v {
                            Value::String(s) => Cow::Borrowed(s.as_bytes()),
                            other => Cow::Owned(other.to_string().into_bytes()),
                        })
                    });
                }
            }
        }
    }
}

fn record_entry<'a>(
    stats: &mut Stats,
    now_us: u64,
    datapoints: usize,
    get: impl Fn(&str) -> Option<Cow<'a, [u8]>>,
) {
    stats.datapoints += datapoints as u64;
    let seq = get(simulate::KEYS[0]).and_then(|v| simulate::parse_digits(&v));
    let sent = get(simulate::KEYS[1]).and_then(|v| simulate::parse_digits(&v));
    match (seq, sent) {
        (Some(seq), Some(sent)) => {
            let sent = simulate::unwrap_sent_us(sent, now_us);
            stats.frame(seq, now_us.saturating_sub(sent));
        }
        _ => stats.parse_errors += 1,
    }
}

// ---------------------------------------------------------------------------------------------
// The publisher of --subscriber-only

struct Published {
    frames: u64,
    publishes: u64,
    elapsed_s: f64,
}

/// Publishes what the connector would: frames converted by the connector's own converter,
/// batched by its own `UplinkBatch` into payloads of at most --max-payload-size, QoS 1 with 100
/// in flight.
fn publish_directly(options: &Options, port: u16) -> anyhow::Result<Published> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let text = simulate::socket_json(Protocol::Tcp, 0, 1024).to_string();
        let built = connector_core::load::load_str(&text)?.built;
        let converter = &built.devices.devices()[0].converter;

        let (client, mut event_loop) = mqtt_client("bench-publisher".to_owned(), port, 100);
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let done = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let driver = {
            let done = done.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut connected_tx = Some(connected_tx);
                let deadline = Instant::now() + Duration::from_secs(1200);
                while Instant::now() < deadline {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            if let Some(tx) = connected_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Incoming::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) if done.load(Ordering::Relaxed) => return,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), connected_rx)
            .await
            .context("publisher did not connect")??;

        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(options.duration);
        let limit = options.count.unwrap_or(u64::MAX);
        let (mut frames, mut publishes) = (0u64, 0u64);
        let mut frame = [0u8; simulate::FRAME_LEN];
        let mut last = start;
        while frames < limit {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let due = if options.rate == 0 {
                frames + 4096
            } else {
                (now.duration_since(start).as_secs_f64() * options.rate as f64) as u64 + 1
            };
            let n = due.min(limit).saturating_sub(frames).min(4096);
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let sent_us = simulate::now_us();
            let ts_ms = (sent_us / 1000) as i64;
            let mut batch = connector_core::thingsboard::api::UplinkBatch::new();
            for i in 0..n {
                simulate::encode_frame(&mut frame, frames + i, sent_us, 0);
                batch.add(converter.convert(&frame[..simulate::FRAME_LEN - 1], ts_ms));
            }
            for payload in batch.telemetry_payloads(options.max_payload) {
                client
                    .publish("v1/gateway/telemetry", QoS::AtLeastOnce, false, payload)
                    .await?;
                publishes += 1;
            }
            frames += n;
            last = Instant::now();
        }
        // Let the last publishes be acknowledged (bounded).
        let wait_until = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::Relaxed) < publishes && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done.store(true, Ordering::Relaxed);
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
        Ok(Published {
            frames,
            publishes,
            elapsed_s: last.duration_since(start).as_secs_f64(),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// /proc

/// CPU time (user + system) of `pid` in clock ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state(3) ppid(4) ... utime(14) stime(15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// A child of this process running `name` (Mosquitto is started by the harness).
fn child_pid(name: &str) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == name && ppid == Some(me) {
            return Some(pid);
        }
    }
    None
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The machine's CPU ticks from the `cpu` line of /proc/stat: stolen by the hypervisor, and spent
/// in processes (user, nice and system time, which the processes' own ticks add up to).
fn machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let field = |index: usize| fields.get(index).copied();
    Some(MachineTicks {
        steal: field(7)?,
        processes: field(0)? + field(1)? + field(2)?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct MachineTicks {
    steal: u64,
    processes: u64,
}

type Samples = Vec<(Instant, Vec<Option<u64>>)>;

/// The ticks of each process, then the machine's stolen and process ticks (indices
/// `pids.len()` and `pids.len() + 1`).
fn sample_ticks(pids: &[u32]) -> Vec<Option<u64>> {
    let mut ticks: Vec<Option<u64>> = pids.iter().map(|&p| proc_ticks(p)).collect();
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| machine_ticks(&stat));
    ticks.push(machine.map(|m| m.steal));
    ticks.push(machine.map(|m| m.processes));
    ticks
}

/// CPU ticks of some processes every 20 ms, and on demand.
struct Sampler {
    pids: Vec<u32>,
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Self {
        let samples: Arc<Mutex<Samples>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pids, samples, stop) = (pids.clone(), samples.clone(), stop.clone());
            // Bounded: at most 20 minutes of samples.
            thread::spawn(move || {
                for _ in 0..60_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let ticks = sample_ticks(&pids);
                    samples.lock().unwrap().push((Instant::now(), ticks));
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            pids,
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn sample_now(&self) {
        let ticks = sample_ticks(&self.pids);
        self.samples.lock().unwrap().push((Instant::now(), ticks));
    }

    fn stop(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by_key(|(at, _)| *at);
        samples
    }
}

/// CPU % of one core used by process `index` between the last sample at or before `from` and
/// the first at or after `to`.
fn cpu_percent(samples: &Samples, index: usize, from: Instant, to: Instant) -> f64 {
    let first = samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= from)
        .or(samples.first());
    let last = samples.iter().find(|(at, _)| *at >= to).or(samples.last());
    let (Some((a, ta)), Some((b, tb))) = (first, last) else {
        return 0.0;
    };
    let (Some(Some(ta)), Some(Some(tb))) = (ta.get(index), tb.get(index)) else {
        return 0.0;
    };
    let wall = b.duration_since(*a).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (tb.saturating_sub(*ta)) as f64 / clock_ticks_per_second() / wall * 100.0
}

/// The value of an unlabelled metric from the connector's /metrics.
fn scrape_metric(port: u16, name: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Numbers

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// p50/p90/p99/p99.9/max in milliseconds of sorted microsecond latencies.
fn latency_json(sorted_us: &[u32]) -> Value {
    if sorted_us.is_empty() {
        return Value::Null;
    }
    let at = |q: f64| {
        let index = ((sorted_us.len() - 1) as f64 * q).round() as usize;
        round(f64::from(sorted_us[index]) / 1000.0, 3)
    };
    json!({
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": at(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ticks_are_read_from_the_cpu_line() {
        let stat = "cpu  2456634 10 570215 2865329 16307 0 137362 78820 0 0\n\
                    cpu0 1228317 5 285107 1432664 8153 0 68681 39410 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(
            machine_ticks(stat),
            Some(MachineTicks {
                steal: 78820,
                processes: 2456634 + 10 + 570215,
            })
        );
        assert_eq!(machine_ticks("cpu  1 2 3\n"), None, "no steal column");
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
    }
}
