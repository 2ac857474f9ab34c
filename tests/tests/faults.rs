//! Fault tests: a real Mosquitto killed, frozen and restarted, the connector terminated and killed
//! with a disk queue, a full queue under each policy, thousands of idle connections and hostile
//! clients, all on loopback. Frames are the load generator's (`socket_connector::simulate`), so
//! every frame carries a unique sequence number and its send time; what arrives is counted by
//! sequence number at a subscriber that plays ThingsBoard's side.
//!
//! The tests run one at a time (they measure timing and share two cores) and each is bounded in
//! time. Numbers they measure are printed (`cargo test -p e2e-tests --test faults -- --nocapture`)
//! and recorded in docs/reliability.md.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::http::{get, metric, sample};
use e2e_tests::peer::answer_session_limits;
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, PROMPTLY};
use rumqttc::{Event, Incoming, QoS, SubscribeFilter};
use serde_json::{json, Value};
use socket_connector::simulate::{
    self, encode_frame, now_us, parse_digits, unwrap_sent_us, LoadOptions, Progress, Protocol,
    DEVICE_NAME, FRAME_LEN,
};
use tokio::io::AsyncWriteExt;

/// One test at a time: they measure latency and throughput on a shared machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FRAMES: &str = "socket_connector_frames_received_total{device=\"Bench Device\"}";

// ---------------------------------------------------------------------------------------------
// The ThingsBoard side: a subscriber that counts frames by sequence number.

#[derive(Default)]
struct Arrivals {
    /// Every frame's sequence number as it arrived, duplicates included.
    seqs: Vec<u64>,
    /// Receive time minus the frame's send time, per frame.
    latencies_us: Vec<u64>,
    /// SUBACKs: one per (re)connected session.
    sessions: usize,
    last: Option<Instant>,
}

/// Subscribes to `v1/gateway/telemetry` (QoS 1) and answers `getSessionLimits`; subscribes again
/// on every new session, so it follows the broker through a restart.
struct Collector {
    arrivals: Arc<Mutex<Arrivals>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start(port: u16) -> Self {
        let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
        let shared = arrivals.clone();
        let id = format!("faults-collector-{}-{}", std::process::id(), free_port());
        let (client, mut event_loop) = e2e_tests::peer::mqtt_client(id, port, 100);
        let task = tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = client.try_subscribe_many([
                            SubscribeFilter::new("v1/gateway/telemetry".into(), QoS::AtLeastOnce),
                            SubscribeFilter::new(
                                "v1/devices/me/rpc/request/+".into(),
                                QoS::AtLeastOnce,
                            ),
                        ]);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        shared.lock().unwrap().sessions += 1;
                    }
                    Ok(Event::Incoming(Incoming::Publish(publish))) => {
                        let now = now_us();
                        if publish.topic == "v1/gateway/telemetry" {
                            let mut arrivals = shared.lock().unwrap();
                            record(&mut arrivals, &publish.payload, now);
                        } else {
                            answer_session_limits(&client, &publish.topic, &publish.payload);
                        }
                    }
                    Ok(_) => {}
                    // Broker gone: rumqttc connects again on the next poll.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let collector = Self { arrivals, task };
        assert!(
            collector.wait(PROMPTLY, |a| a.sessions >= 1).await,
            "the collector did not subscribe"
        );
        collector
    }

    fn with<T>(&self, read: impl FnOnce(&Arrivals) -> T) -> T {
        read(&self.arrivals.lock().unwrap())
    }

    fn distinct(&self) -> BTreeSet<u64> {
        self.with(|a| a.seqs.iter().copied().collect())
    }

    /// Waits until `done` holds; false after `timeout`.
    async fn wait(&self, timeout: Duration, done: impl Fn(&Arrivals) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.with(&done) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until nothing has arrived for `quiet` (at most `timeout`).
    async fn settle(&self, quiet: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = self.with(|a| a.seqs.len());
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.with(|a| a.seqs.len());
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records the frames of one gateway telemetry payload: entries whose `seq` and `sent_us` are the
/// generator's digits (hostile clients' entries are not frames and are skipped).
fn record(arrivals: &mut Arrivals, payload: &[u8], now: u64) {
    let Ok(Value::Object(devices)) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    for entries in devices.values() {
        for entry in entries.as_array().into_iter().flatten() {
            let values = &entry["values"];
            let digits = |key: &str, len: usize| {
                values[key]
                    .as_str()
                    .filter(|text| text.len() == len)
                    .and_then(|text| parse_digits(text.as_bytes()))
            };
            if let (Some(seq), Some(sent)) = (digits("seq", 8), digits("sent_us", 11)) {
                arrivals.seqs.push(seq);
                arrivals
                    .latencies_us
                    .push(now.saturating_sub(unwrap_sent_us(sent, now)));
                arrivals.last = Some(Instant::now());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Devices, the connector, metrics.

/// One TCP device sending frames `0, 1, 2, ...` in order, `rate` per second (0: as fast as the
/// socket takes them), until `count` or until stopped. `written` counts frames whose write
/// completed.
struct Device {
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Device {
    async fn start(target: SocketAddr, rate: u64, count: u64, send_buffer: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = send_buffer {
            socket.set_send_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(target).await.expect("device connects");
        stream.set_nodelay(true).unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (written.clone(), stop.clone());
        let task = tokio::spawn(async move {
            const BATCH: u64 = 64;
            let start = Instant::now();
            let mut buffer = vec![0u8; BATCH as usize * FRAME_LEN];
            let mut sent = 0u64;
            while sent < count && !stopped.load(Ordering::Relaxed) {
                let due = if rate == 0 {
                    count
                } else {
                    (start.elapsed().as_secs_f64() * rate as f64) as u64 + 1
                };
                let frames = due.min(count).saturating_sub(sent).min(BATCH);
                if frames == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let time = now_us();
                for (i, frame) in buffer
                    .chunks_exact_mut(FRAME_LEN)
                    .take(frames as usize)
                    .enumerate()
                {
                    encode_frame(frame, sent + i as u64, time, 0);
                }
                if let Err(error) = stream
                    .write_all(&buffer[..frames as usize * FRAME_LEN])
                    .await
                {
                    return Some(error.to_string());
                }
                sent += frames;
                counter.store(sent, Ordering::Relaxed);
            }
            None
        });
        Self {
            written,
            stop,
            task,
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops sending; the write error, if the connection failed.
    async fn finish(self) -> (u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let error = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the device did not stop")
            .expect("device task");
        (self.written.load(Ordering::Relaxed), error)
    }
}

/// The generator's configuration: frames become `seq`, `sent_us`, `conn` of one device.
fn config() -> Value {
    simulate::socket_json(Protocol::Tcp, 0, 1024)
}

/// Starts the connector with `/metrics` and `extra` arguments; returns it and the metrics address.
fn start_connector(config: &Value, broker: u16, extra: &[&str]) -> (ConnectorProcess, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let address = metrics.to_string();
    let mut args = vec!["--metrics-address", address.as_str()];
    args.extend_from_slice(extra);
    let connector = ConnectorProcess::start_with(config, broker, &args);
    (connector, metrics)
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Sequence numbers in `0..end` that are not in `got`.
fn missing(got: &BTreeSet<u64>, end: u64) -> Vec<u64> {
    (0..end).filter(|seq| !got.contains(seq)).collect()
}

fn head(seqs: &[u64]) -> &[u64] {
    &seqs[..seqs.len().min(20)]
}

fn duplicates(collector: &Collector) -> usize {
    collector.with(|a| a.seqs.len()) - collector.distinct().len()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

// ---------------------------------------------------------------------------------------------
// 1. The broker is killed and comes back.

/// Mosquitto is SIGKILLed while 100 TCP devices send 20 frames/s each, and restarted on the same
/// port 10 s later. The connector keeps reading (the memory queue holds the outage) and, once the
/// broker is back, replays everything not acknowledged: every frame the devices wrote arrives at
/// least once.
#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_for_10_s_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const CONNECTIONS: usize = 100;
    let mut broker = Mosquitto::start();
    let collector = Collector::start(broker.port()).await;
    let (connector, metrics) = start_connector(&config(), broker.port(), &[]);
    connector.wait_for_log("connected to ThingsBoard");

    let mut load = LoadOptions::new(
        connector.local_addr,
        CONNECTIONS,
        20 * CONNECTIONS as u64,
        Duration::from_secs(16),
    );
    load.batch = Some(8);
    let progress = Arc::new(Progress::default());
    let generator = {
        let progress = progress.clone();
        tokio::spawn(async move { simulate::run(&load, progress).await })
    };
    let started = Instant::now();
    while progress.connected.load(Ordering::Relaxed) < CONNECTIONS {
        assert!(started.elapsed() < PROMPTLY, "devices did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        collector.with(|a| !a.seqs.is_empty()),
        "nothing flowed before the fault"
    );

    broker.kill();
    let killed_at = progress.frames_sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let queued = metric(metrics, "socket_connector_queue_records");
    broker.restart();
    // The collector must be subscribed again before the connector republishes, or the broker
    // would drop what nobody subscribes to. The connector's backoff is seconds by now.
    assert!(
        collector.wait(PROMPTLY, |a| a.sessions >= 2).await,
        "the collector did not subscribe again"
    );
    assert_eq!(
        connector.logs_containing("connected to ThingsBoard").len(),
        1,
        "the connector reconnected before the collector subscribed again: test invalid"
    );

    let summary = generator.await.unwrap().expect("load generator");
    assert_eq!(summary.connected, CONNECTIONS);
    assert_eq!(
        summary.errors, 0,
        "a device connection failed: {:?}",
        summary.first_error
    );
    let expected: BTreeSet<u64> = summary
        .sent_per_connection
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| (0..n).map(move |i| c as u64 + i * CONNECTIONS as u64))
        .collect();
    let total = expected.len();
    collector
        .wait(Duration::from_secs(30), |a| {
            a.seqs.len() >= total
                && expected.is_subset(&a.seqs.iter().copied().collect::<BTreeSet<u64>>())
        })
        .await;
    collector.settle(Duration::from_millis(500), PROMPTLY).await;
    let got = collector.distinct();
    let lost: Vec<u64> = expected.difference(&got).copied().collect();
    let dups = duplicates(&collector);
    println!(
        "broker kill: {total} frames written ({killed_at} before the kill), {} queued at the end of \
         the outage, {} distinct arrived, {} lost, {dups} duplicates",
        queued,
        got.len(),
        lost.len()
    );
    assert!(queued > 0.0, "nothing was queued during the outage");
    assert!(
        lost.is_empty(),
        "{} frames lost, first {:?}",
        lost.len(),
        head(&lost)
    );
    assert!(got.is_subset(&expected), "frames nobody sent arrived");
    assert!(connector.logs_containing("connected to ThingsBoard").len() >= 2);
    assert_eq!(metric(metrics, "socket_connector_queue_records"), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 2, 3. The connector is terminated or killed with records on disk.

/// What a restart with a disk queue delivered.
struct Restart {
    /// `frames_received_total` scraped just before the signal.
    accepted: u64,
    /// Records in the queue just before the signal.
    queued: f64,
    /// Frames the device's writes completed before the connector went away.
    written: u64,
    /// Distinct frames that arrived (before and after the restart).
    got: BTreeSet<u64>,
    duplicates: usize,
    replayed: Value,
}

impl Restart {
    /// What happened around the restart, for the test's output.
    fn describe(&self) -> String {
        format!(
            "{} accepted before the signal ({} records queued), {} written, replayed {}, \
             {} distinct arrived (max seq {}), {} duplicates",
            self.accepted,
            self.queued,
            self.written,
            self.replayed,
            self.got.len(),
            self.got.last().copied().unwrap_or(0),
            self.duplicates
        )
    }
}

/// One device sends 2,000 frames/s in order; the broker is frozen (SIGSTOP) so records pile up
/// in the disk queue; the connector gets `signal` under load; then the broker resumes and the
/// connector starts again on the same directory and replays the queue.
async fn restart_with_disk_queue(signal: &str, fsync: &str) -> Restart {
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port()).await;
    let directory = tempfile::tempdir().unwrap();
    let queue = directory.path().join("queue");
    let queue_arg = queue.to_str().unwrap();
    let args = [
        "--queue-directory",
        queue_arg,
        "--queue-fsync",
        fsync,
        "--shutdown-grace-seconds",
        "1",
    ];
    let (connector, metrics) = start_connector(&config(), broker.port(), &args);
    connector.wait_for_log("connected to ThingsBoard");
    let device = Device::start(connector.local_addr, 2_000, u64::MAX, None).await;
    assert!(
        collector.wait(PROMPTLY, |a| a.seqs.len() > 500).await,
        "frames did not flow"
    );
    broker.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = metric(metrics, "socket_connector_queue_records");
    let accepted = metric(metrics, FRAMES) as u64;
    match signal {
        "TERM" => {
            let status = connector.terminate();
            println!("connector exit after SIGTERM: {status:?}");
        }
        _ => {
            // What was read in the last moments is still in the uplink's channel and batch,
            // not yet in the queue: a kill loses it, as it loses the socket buffers.
            // Frames counted this long before the kill must all be durable.
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(connector); // SIGKILL
        }
    }
    let (written, error) = device.finish().await;
    println!("device stopped after {written} frames ({error:?})");
    broker.resume();
    let (connector, _) = start_connector(&config(), broker.port(), &args);
    let replayed = connector.wait_for_log("replaying records queued by an earlier run");
    collector
        .wait(Duration::from_secs(20), |a| {
            a.seqs.iter().copied().collect::<BTreeSet<u64>>().len() as u64 >= accepted
        })
        .await;
    collector.settle(Duration::from_secs(1), PROMPTLY).await;
    Restart {
        accepted,
        queued,
        written,
        got: collector.distinct(),
        duplicates: duplicates(&collector),
        replayed,
    }
}

/// SIGTERM under load with the broker not answering and a 1 s grace period: the queue is still
/// full of unacknowledged records at exit and is replayed by the next process. Accepted = every
/// frame the connector counted (`frames_received_total`) before the signal; the device sends in
/// order, so what arrives must be the contiguous prefix `0..=max` with `max + 1 >= accepted`.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_disk_queue_replays_every_accepted_frame() {
    let _serial = SERIAL.lock().await;
    let run = restart_with_disk_queue("TERM", "1000ms").await;
    let max = run.got.last().copied().unwrap_or(0);
    let holes = missing(&run.got, max + 1);
    println!("SIGTERM: {}, {} holes", run.describe(), holes.len());
    assert!(run.queued > 0.0, "nothing was queued at SIGTERM");
    assert!(run.replayed["records"].as_u64().unwrap_or(0) > 0);
    assert!(
        holes.is_empty(),
        "{} holes, first {:?}",
        holes.len(),
        head(&holes)
    );
    assert!(
        max + 1 >= run.accepted,
        "accepted {} frames, only 0..={max} arrived: {} lost",
        run.accepted,
        run.accepted - (max + 1)
    );
}

/// SIGKILL under load, `--queue-fsync never`: a process kill loses nothing the queue had written
/// (it reached the operating system). "Accepted" frames were counted 3 s after the broker froze
/// and 100 ms before the kill, long after the uplink pushed them into the queue (read coalescing,
/// the channel and the batch hold a frame for milliseconds), so not one of them may be lost; frames
/// the device wrote after that may be.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_with_disk_queue_loses_no_accepted_frame() {
    let _serial = SERIAL.lock().await;
    let run = restart_with_disk_queue("KILL", "never").await;
    let max = run.got.last().copied().unwrap_or(0);
    let holes = missing(&run.got, max + 1);
    let lost = missing(&run.got, run.accepted).len() as u64;
    println!(
        "SIGKILL: {}, {lost} of the accepted lost, {} holes",
        run.describe(),
        holes.len()
    );
    assert!(run.queued > 0.0, "nothing was queued at SIGKILL");
    // The journal is replayed up to the last complete batch: no holes.
    assert!(
        holes.is_empty(),
        "{} holes, first {:?}",
        holes.len(),
        head(&holes)
    );
    assert_eq!(lost, 0, "accepted frames lost");
}

/// A burst of 200,000 frames while ThingsBoard is gone (broker killed), the connector killed 3 s
/// after the last frame was read (past the 1 s fsync interval), restarted on the same queue with
/// ThingsBoard back: every frame the device sent arrives.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_after_a_burst_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut broker = Mosquitto::start();
    let collector = Collector::start(broker.port()).await;
    let directory = tempfile::tempdir().unwrap();
    let queue = directory.path().join("queue");
    let args = [
        "--queue-directory",
        queue.to_str().unwrap(),
        "--queue-fsync",
        "1000ms",
    ];
    let (connector, metrics) = start_connector(&config(), broker.port(), &args);
    connector.wait_for_log("connected to ThingsBoard");
    broker.kill();
    const BURST: u64 = 200_000;
    let device = Device::start(connector.local_addr, 0, BURST, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(metrics, FRAMES) < BURST as f64 {
        assert!(
            Instant::now() < deadline,
            "the connector did not read the burst"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (written, error) = device.finish().await;
    assert_eq!((written, error), (BURST, None));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = collector.distinct().len();
    let queued = metric(metrics, "socket_connector_queue_records");
    drop(connector); // SIGKILL
    broker.restart();
    let (connector, _) = start_connector(&config(), broker.port(), &args);
    collector
        .wait(Duration::from_secs(60), |a| {
            a.seqs.iter().copied().collect::<BTreeSet<u64>>().len() as u64 >= BURST
        })
        .await;
    collector.settle(Duration::from_secs(1), PROMPTLY).await;
    let missing = missing(&collector.distinct(), BURST);
    println!(
        "SIGKILL after a burst: {before_kill} of {BURST} had arrived before the kill, {queued} records queued, {} missing after the restart ({} duplicates)",
        missing.len(),
        duplicates(&collector)
    );
    drop(connector);
    assert!(
        missing.is_empty(),
        "{} frames lost, first {:?}",
        missing.len(),
        head(&missing)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The queue is full.

/// The broker is frozen before the connector starts (so nothing is ever sent and acknowledged),
/// the device sends with a 16 KiB queue; then the broker resumes.
struct Full {
    broker: Mosquitto,
    collector: Collector,
    connector: ConnectorProcess,
    metrics: SocketAddr,
}

const QUEUE_MAX_BYTES: u64 = 16 * 1024;

async fn full_queue(policy: &str) -> Full {
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port()).await;
    broker.pause();
    let max = QUEUE_MAX_BYTES.to_string();
    let (connector, metrics) = start_connector(
        &config(),
        broker.port(),
        &["--queue-max-bytes", &max, "--queue-full-policy", policy],
    );
    Full {
        broker,
        collector,
        connector,
        metrics,
    }
}

/// Block: the device is slowed down by TCP flow control while the broker is frozen (its writes
/// stop completing, the connector's memory stays bounded), and after the broker is back every
/// frame arrives.
#[tokio::test(flavor = "multi_thread")]
async fn full_queue_block_slows_the_device_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const COUNT: u64 = 60_000;
    let full = full_queue("block").await;
    // A small send buffer, so that what the kernel holds for the device is small too.
    let device = Device::start(full.connector.local_addr, 0, COUNT, Some(8192)).await;
    // Wait until the writes stop completing.
    let started = Instant::now();
    let mut last = device.written();
    let stalled = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = device.written();
        if now == last {
            break now;
        }
        last = now;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the device was never slowed down"
        );
    };
    let accepted = metric(full.metrics, FRAMES);
    let queue_bytes = metric(full.metrics, "socket_connector_queue_bytes");
    let rss = rss_kib(full.connector.pid());
    println!(
        "block: device stalled after {stalled} of {COUNT} frames, {accepted} read by the \
         connector, queue {queue_bytes} bytes, RSS {rss} KiB"
    );
    assert!(stalled < COUNT, "the device was not slowed down");
    assert!(
        queue_bytes <= (QUEUE_MAX_BYTES + 8192) as f64,
        "queue above its bound"
    );
    assert!(rss < 64 * 1024, "connector RSS {rss} KiB");
    assert_eq!(
        metric(
            full.metrics,
            "socket_connector_dropped_total{reason=\"queue_full_drop_newest\"}"
        ),
        0.0
    );

    full.broker.resume();
    let (written, error) = {
        let deadline = Instant::now() + Duration::from_secs(30);
        while device.written() < COUNT && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        device.finish().await
    };
    assert_eq!((written, error), (COUNT, None));
    full.collector
        .wait(Duration::from_secs(30), |a| a.seqs.len() as u64 >= COUNT)
        .await;
    full.collector
        .settle(Duration::from_millis(500), PROMPTLY)
        .await;
    let got = full.collector.distinct();
    let lost = missing(&got, COUNT);
    println!(
        "block: {} of {COUNT} arrived, {} lost, {} duplicates",
        got.len(),
        lost.len(),
        duplicates(&full.collector)
    );
    assert!(
        lost.is_empty(),
        "{} lost, first {:?}",
        lost.len(),
        head(&lost)
    );
}

/// Sends `COUNT` frames into a full queue, waits until the connector read them all, resumes the
/// broker and returns what arrived and the drop counter of `reason`.
async fn overflow(policy: &str, reason: &str) -> (BTreeSet<u64>, f64, u64) {
    const COUNT: u64 = 20_000;
    let full = full_queue(policy).await;
    let device = Device::start(full.connector.local_addr, 0, COUNT, None).await;
    let started = Instant::now();
    while metric(full.metrics, FRAMES) < COUNT as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the connector did not read all frames ({policy} never blocks)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (written, error) = device.finish().await;
    assert_eq!((written, error), (COUNT, None));
    // The uplink task may still be working through the channel in front of the queue: wait until
    // it has handed every frame's 3 datapoints to the queue (accepted or dropped), or records
    // pushed after the broker resumes would find room again.
    let started = Instant::now();
    while metric(full.metrics, "socket_connector_datapoints_published_total") < (3 * COUNT) as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the uplink did not process all frames"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped = metric(
        full.metrics,
        &format!("socket_connector_dropped_total{{reason=\"{reason}\"}}"),
    );
    let queue_bytes = metric(full.metrics, "socket_connector_queue_bytes");
    full.broker.resume();
    full.collector
        .wait(Duration::from_secs(20), |a| !a.seqs.is_empty())
        .await;
    full.collector
        .settle(Duration::from_secs(1), PROMPTLY)
        .await;
    let got = full.collector.distinct();
    println!(
        "{policy}: {COUNT} frames sent with the broker frozen, queue {queue_bytes} bytes, \
         {dropped} records dropped ({reason}), {} frames arrived: {:?}..={:?}",
        got.len(),
        got.first(),
        got.last()
    );
    assert!(queue_bytes <= (QUEUE_MAX_BYTES + 8192) as f64);
    (got, dropped, COUNT)
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_drop_oldest_keeps_the_newest_frames() {
    let _serial = SERIAL.lock().await;
    let (got, dropped, count) = overflow("drop-oldest", "queue_full_drop_oldest").await;
    assert!(dropped > 0.0, "no drop counted");
    assert!(got.contains(&(count - 1)), "the newest frame is missing");
    assert!(!got.contains(&0), "the oldest frame arrived");
    assert!((got.len() as u64) < count / 2);
    // What is kept is the newest run of frames, without holes.
    let first = *got.first().unwrap();
    assert_eq!(
        got.len() as u64,
        count - first,
        "holes in the newest frames"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_drop_newest_keeps_the_oldest_frames() {
    let _serial = SERIAL.lock().await;
    let (got, dropped, count) = overflow("drop-newest", "queue_full_drop_newest").await;
    assert!(dropped > 0.0, "no drop counted");
    assert!(got.contains(&0), "the oldest frame is missing");
    assert!(!got.contains(&(count - 1)), "the newest frame arrived");
    assert!((got.len() as u64) < count / 2);
    // What is kept is the oldest run of frames, without holes: once a record was dropped, newer
    // ones are dropped too until something is acknowledged.
    let last = *got.last().unwrap();
    assert_eq!(got.len() as u64, last + 1, "holes in the oldest frames");
}

// ---------------------------------------------------------------------------------------------
// 5. Many idle connections.

/// 5,000 idle TCP connections and one device sending 1,000 frames/s for 5 s: the busy device's
/// end-to-end latency (frame send time to the subscriber's receive) stays low.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_idle_connections_do_not_delay_a_busy_device() {
    let _serial = SERIAL.lock().await;
    const IDLE: usize = 5_000;
    raise_open_files(2 * IDLE as u64 + 1_000);
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port()).await;
    let (connector, metrics) = start_connector(&config(), broker.port(), &[]);
    connector.wait_for_log("connected to ThingsBoard");
    let target = connector.local_addr;
    let started = Instant::now();
    let idle = tokio::task::spawn_blocking(move || {
        // Paced at 2,000/s: the listener's accept backlog is 128, and a storm overflows it
        // (SYN retransmits of 1 s and more; docs/benchmarks.md).
        (0..IDLE)
            .map(|_| {
                std::thread::sleep(Duration::from_micros(500));
                std::net::TcpStream::connect(target).expect("idle connection")
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    println!(
        "{IDLE} idle connections connected after {:?}",
        started.elapsed()
    );
    while metric(metrics, "socket_connector_connections_open") < IDLE as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the connector did not accept {IDLE} connections"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = rss_kib(connector.pid());
    println!("{IDLE} idle connections open after {:?}", started.elapsed());

    const RATE: u64 = 1_000;
    const COUNT: u64 = 5_000;
    let device = Device::start(target, RATE, COUNT, None).await;
    collector
        .wait(Duration::from_secs(20), |a| a.seqs.len() as u64 >= COUNT)
        .await;
    let (written, error) = device.finish().await;
    assert_eq!((written, error), (COUNT, None));
    let got = collector.distinct();
    assert!(missing(&got, COUNT).is_empty(), "frames lost");
    let mut latencies = collector.with(|a| a.latencies_us.clone());
    latencies.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    println!(
        "{IDLE} idle connections (connector RSS {rss} KiB): busy device {COUNT} frames at \
         {RATE}/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(p50),
        ms(p99),
        ms(max)
    );
    assert!(p99 < 50_000, "p99 {} ms", ms(p99));
    // The idle connections are all still open.
    assert!(metric(metrics, "socket_connector_connections_open") >= IDLE as f64);
    assert!(alive(connector.pid()));
    drop(idle);
}

/// Raises the soft limit on open files (inherited by the connector) to at least `needed`.
fn raise_open_files(needed: u64) {
    let limits = || -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        (fields[0], fields[1])
    };
    let (soft, hard) = limits();
    if soft >= needed {
        return;
    }
    let _ = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard}:{hard}"))
        .status();
    let (soft, _) = limits();
    assert!(
        soft >= needed,
        "open files limited to {soft}, {needed} needed: raise the hard limit (ulimit -Hn)"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Hostile clients.

/// Malformed frames, an oversized frame, invalid UTF-8 and a client sending one byte per second,
/// all while another device sends 500 frames/s: the device's frames all arrive, the process
/// stays alive and `/healthz` answers.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_clients_do_not_disturb_a_well_behaved_device() {
    let _serial = SERIAL.lock().await;
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port()).await;
    let mut config = config();
    config["socket"]["framing"]["maxFrameLength"] = json!(256);
    let (connector, metrics) = start_connector(&config, broker.port(), &[]);
    connector.wait_for_log("connected to ThingsBoard");
    let target = connector.local_addr;

    const RATE: u64 = 500;
    const COUNT: u64 = 4_000;
    let device = Device::start(target, RATE, COUNT, None).await;

    let hostile = tokio::spawn(async move {
        let mut sent = Vec::new();
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "malformed",
                b"garbage\n,,,,\n\n\n1234\nabc,def,ghi\n".to_vec(),
            ),
            ("oversized", vec![b'7'; 1 << 20]),
            (
                "invalid utf-8",
                b"\xff\xfe\xfd\xc3\x28,\xa0\xa1,\xe2\x82\n\x80\x80\x80\x80\n".to_vec(),
            ),
            ("nul bytes", vec![0u8; 4096]),
            (
                "binary noise",
                (0..65536u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect(),
            ),
            ("no delimiter, then close", vec![b'x'; 200]),
        ];
        for (name, bytes) in cases {
            let mut stream = tokio::net::TcpStream::connect(target).await.unwrap();
            // The connector may close the connection (oversized frame): a write error is fine.
            let result = stream.write_all(&bytes).await;
            sent.push(format!("{name}: {} bytes, {result:?}", bytes.len()));
        }
        sent
    });
    // One byte per second: a frame that takes 8 s to arrive, then stays unfinished.
    let slow = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(target).await.unwrap();
        for byte in b"99999999" {
            stream.write_all(&[*byte]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stream
    });

    let arrived = collector
        .wait(Duration::from_secs(30), |a| a.seqs.len() as u64 >= COUNT)
        .await;
    let (written, error) = device.finish().await;
    assert_eq!((written, error), (COUNT, None));
    for line in hostile.await.unwrap() {
        println!("hostile client: {line}");
    }
    let _slow = slow.await.unwrap();
    assert!(arrived, "the device's frames did not all arrive");
    let got = collector.distinct();
    let lost = missing(&got, COUNT);
    assert!(
        lost.is_empty(),
        "{} lost, first {:?}",
        lost.len(),
        head(&lost)
    );
    assert!(alive(connector.pid()), "the connector died");
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_owned()));
    let (_, text) = get(metrics, "/metrics");
    let decode_errors = sample(
        &text,
        &format!("socket_connector_decode_errors_total{{device=\"{DEVICE_NAME}\"}}"),
    );
    println!(
        "hostile clients: {} of {COUNT} device frames arrived, decode errors {decode_errors:?}",
        got.len()
    );
}
