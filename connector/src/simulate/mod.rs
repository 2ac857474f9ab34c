//! Load generator: simulated devices that open N TCP connections (or UDP sockets) to a connector
//! and send fixed-width frames at a given total rate, or as fast as the socket takes them.
//!
//! # Frame layout
//!
//! Every frame is 23 bytes of ASCII, newline-terminated:
//!
//! ```text
//! 00001234,83912345678,7\n
//! |      | |         | |
//! 0      8 9        20 21 22      byte offsets
//! ```
//!
//! | Bytes | Field | Content |
//! |---|---|---|
//! | 0..8 | `seq` | Sequence number, 8 decimal digits, zero-padded, unique per run (modulo 10^8). |
//! | 8 | | `,` |
//! | 9..20 | `sent_us` | Send time: microseconds since the Unix epoch **modulo 10^11** (11 digits, wraps every ~27.8 h); [`unwrap_sent_us`] restores the full value from the receiver's clock. |
//! | 20 | | `,` |
//! | 21 | `conn` | Index of the sending connection modulo 10, one digit. |
//! | 22 | | `\n` |
//!
//! With `"framing": {"type": "delimiter", "delimiter": "\\n"}` (the delimiter is stripped), the
//! connector sees 22-byte frames and `byteFrom`/`byteTo` 0..8, 9..20 and 21..22 cut the three
//! telemetry keys; [`socket_json`] writes that configuration.
//!
//! Connection `c` of `N` sends the sequence numbers `first_seq + c, first_seq + c + N, ...`, so
//! the numbers are unique over all connections without any coordination. All frames of one write
//! carry the time of that write: latency measured from `sent_us` covers the connector, the broker
//! and the subscriber, not the generator's own lateness.

mod pacer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use pacer::Pacer;

/// Bytes per frame, newline included.
pub const FRAME_LEN: usize = 23;
/// Sequence numbers wrap at this value (8 digits).
pub const SEQ_MODULUS: u64 = 100_000_000;
/// The send time is sent modulo this many microseconds (11 digits, ~27.8 hours).
pub const TIME_MODULUS_US: u64 = 100_000_000_000;
/// The device name in [`socket_json`].
pub const DEVICE_NAME: &str = "Bench Device";
/// Telemetry keys of [`socket_json`], in frame order.
pub const KEYS: [&str; 3] = ["seq", "sent_us", "conn"];
/// Frames per datagram by default: 40 × 23 = 920 bytes fits the default `bufferSize` of 1024
/// (longer datagrams are truncated by the connector).
pub const DEFAULT_UDP_BATCH: usize = 40;
/// Frames per TCP write by default.
pub const DEFAULT_TCP_BATCH: usize = 64;
/// Longest pause between two writes of one connection at low rates.
const MAX_TICK: Duration = Duration::from_millis(20);
/// Timer resolution of the runtime; shorter pauses are not worth asking for.
const MIN_TICK: Duration = Duration::from_millis(1);
/// Frames a connection aims to put in one write when the rate allows it.
const TARGET_FRAMES_PER_WRITE: f64 = 16.0;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write may still take once the run is over (or, without a deadline, at all).
const WRITE_GRACE: Duration = Duration::from_secs(10);
/// Connections being opened at once: below the accept backlog of 128 that a tokio listener gets,
/// so a connection storm measures the server, not SYN retransmits.
const CONNECT_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What to send, where, how fast and for how long.
#[derive(Debug, Clone, Args)]
pub struct LoadOptions {
    /// Address of the connector's device socket.
    #[arg(long, default_value = "127.0.0.1:50000")]
    pub target: SocketAddr,
    /// `tcp` connections or `udp` sockets.
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: Protocol,
    /// Number of connections (TCP) or sockets (UDP); the rate is spread evenly over them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Total frames per second over all connections; 0 sends as fast as the sockets take them.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Stop after this many seconds (at least one of --duration and --count is required).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many frames in total.
    #[arg(long)]
    pub count: Option<u64>,
    /// Most frames per TCP write or per UDP datagram (default 64 for TCP, 40 for UDP).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Send one frame per connection, then keep the connections open and silent until
    /// --duration is over (TCP only): for measuring idle connections.
    #[arg(long)]
    pub idle: bool,
    /// Sequence number of the first frame.
    #[arg(long, default_value_t = 0)]
    pub first_seq: u64,
    /// New connections per second at most (0: as fast as the listener accepts them, with
    /// 64 handshakes in flight).
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u64,
}

impl LoadOptions {
    /// Options for `connections` TCP connections to `target` at `rate` frames/s for `duration`.
    pub fn new(target: SocketAddr, connections: usize, rate: u64, duration: Duration) -> Self {
        Self {
            target,
            protocol: Protocol::Tcp,
            connections,
            rate,
            duration: Some(duration.as_secs_f64()),
            count: None,
            batch: None,
            idle: false,
            first_seq: 0,
            connect_rate: 0,
        }
    }

    fn batch(&self) -> usize {
        self.batch
            .unwrap_or(match self.protocol {
                Protocol::Tcp => DEFAULT_TCP_BATCH,
                Protocol::Udp => DEFAULT_UDP_BATCH,
            })
            .max(1)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.duration.is_none() && self.count.is_none() {
            bail!("give --duration and/or --count: the generator never runs unbounded");
        }
        if let Some(duration) = self.duration {
            if !(duration.is_finite() && duration > 0.0 && duration <= 86_400.0) {
                bail!("--duration must be between 0 and 86400 seconds");
            }
        }
        if self.idle && self.protocol == Protocol::Udp {
            bail!("--idle needs TCP: UDP has no connections to keep open");
        }
        if self.idle && self.duration.is_none() {
            bail!("--idle needs --duration: how long to keep the connections open");
        }
        if self.count.is_some_and(|c| c > SEQ_MODULUS) {
            bail!("--count above {SEQ_MODULUS} would repeat sequence numbers");
        }
        Ok(())
    }
}

/// Live counters, readable while the generator runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Connections (TCP) or sockets (UDP) open.
    pub connected: AtomicUsize,
    /// Frames written so far.
    pub frames_sent: AtomicU64,
    /// Set to end the run early (checked between writes, and every 50 ms while idle).
    pub stop: AtomicBool,
    /// When every connection was open and sending began: what came before is connecting, not
    /// the load.
    pub sending_since: OnceLock<Instant>,
}

/// What a run did; printed as JSON by `socket-simulate`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub protocol: Protocol,
    pub target: SocketAddr,
    pub connections: usize,
    /// Connections that opened (TCP) or sockets that were bound (UDP).
    pub connected: usize,
    /// Requested frames per second (0: maximum).
    pub target_rate: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// From the first write to the last one.
    pub elapsed_s: f64,
    /// `frames_sent / elapsed_s`.
    pub rate: f64,
    /// Failed connects, writes and sends.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Frames sent by each connection (connection `c` sent `first_seq + c + i × connections`
    /// for `i` below its count). Not printed.
    #[serde(skip)]
    pub sent_per_connection: Vec<u64>,
    /// How late each write went, in µs, sorted: from when its first frame was due at the
    /// requested rate (empty at the maximum rate). A generator that falls behind writes the
    /// frames it owes back to back, so a tail here is the measuring side's, not the connector's.
    /// Not printed.
    #[serde(skip)]
    pub write_lateness_us: Vec<u32>,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Writes one frame into `out[..FRAME_LEN]`.
pub fn encode_frame(out: &mut [u8], seq: u64, sent_us: u64, conn: usize) {
    let out = &mut out[..FRAME_LEN];
    write_digits(&mut out[0..8], seq % SEQ_MODULUS);
    out[8] = b',';
    write_digits(&mut out[9..20], sent_us % TIME_MODULUS_US);
    out[20] = b',';
    out[21] = b'0' + (conn % 10) as u8;
    out[22] = b'\n';
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Parses decimal digits (the `seq` and `sent_us` values as the connector sends them).
pub fn parse_digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// A frame's fields: `(seq, sent_us modulo 10^11, conn digit)`; the trailing newline is optional.
pub fn decode_frame(frame: &[u8]) -> Option<(u64, u64, u8)> {
    let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
    if frame.len() != FRAME_LEN - 1 || frame[8] != b',' || frame[20] != b',' {
        return None;
    }
    let conn = frame[21];
    conn.is_ascii_digit().then_some(())?;
    Some((
        parse_digits(&frame[0..8])?,
        parse_digits(&frame[9..20])?,
        conn - b'0',
    ))
}

/// The full send time from the `sent_us` field (microseconds modulo 10^11), given the receiver's
/// clock `now_us`: the latest time not after `now_us` with that remainder.
pub fn unwrap_sent_us(field: u64, now_us: u64) -> u64 {
    let field = field % TIME_MODULUS_US;
    let back = (now_us % TIME_MODULUS_US + TIME_MODULUS_US - field) % TIME_MODULUS_US;
    now_us.saturating_sub(back)
}

/// The `socket.json` that turns these frames into the telemetry keys `seq`, `sent_us` and `conn`
/// of the device [`DEVICE_NAME`].
pub fn socket_json(protocol: Protocol, port: u16, buffer_size: usize) -> Value {
    json!({
        "name": "Bench Socket Connector",
        "logLevel": "INFO",
        "socket": {
            "type": match protocol { Protocol::Tcp => "TCP", Protocol::Udp => "UDP" },
            "address": "127.0.0.1",
            "port": port,
            "bufferSize": buffer_size,
            "framing": {"type": "delimiter", "delimiter": "\\n"}
        },
        "devices": [{
            "address": "*:*",
            "deviceName": DEVICE_NAME,
            "deviceType": "bench",
            "encoding": "ascii",
            "telemetry": [
                {"key": KEYS[0], "byteFrom": 0, "byteTo": 8},
                {"key": KEYS[1], "byteFrom": 9, "byteTo": 20},
                {"key": KEYS[2], "byteFrom": 21, "byteTo": 22}
            ]
        }]
    })
}

/// ThingsBoard's way of reading the same frames: no framing (each read or datagram is one
/// message, so the generator must send one frame per write) and, as ThingsBoard's examples have,
/// an attribute next to the telemetry: `connection`, the frame's last digit.
pub fn socket_json_unframed(protocol: Protocol, port: u16, buffer_size: usize) -> Value {
    let mut config = socket_json(protocol, port, buffer_size);
    if let Some(socket) = config["socket"].as_object_mut() {
        socket.remove("framing");
    }
    config["devices"][0]["attributes"] =
        json!([{"key": UNFRAMED_ATTRIBUTE, "byteFrom": 21, "byteTo": 22}]);
    config
}

/// The attribute of [`socket_json_unframed`].
pub const UNFRAMED_ATTRIBUTE: &str = "connection";

/// Runs the generator on a runtime of its own (`threads` workers; 1 means the current thread),
/// blocking until it is done.
pub fn run_blocking(
    options: &LoadOptions,
    progress: Arc<Progress>,
    threads: usize,
) -> anyhow::Result<Summary> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(options, progress))
}

/// One connection's share of the work.
struct Plan {
    index: usize,
    /// Frames this connection sends at most.
    quota: u64,
    /// Frames per second of this connection; `None` means as fast as possible.
    rate: Option<f64>,
    batch: usize,
    start: Instant,
    deadline: Option<Instant>,
    tick: Duration,
    first_seq: u64,
    stride: u64,
    idle: bool,
    /// Wakes this connection when its frame is due, when each frame is its own write.
    pacer: Option<Arc<Pacer>>,
}

impl Plan {
    /// When frame `index` of this connection is due at its rate; None without a rate.
    fn due_at(&self, index: u64) -> Option<Instant> {
        let rate = self.rate?;
        Some(self.start + Duration::from_secs_f64(index as f64 / rate))
    }

    async fn wait_until(&self, at: Instant) {
        match &self.pacer {
            Some(pacer) => pacer.until(at).await,
            None => tokio::time::sleep_until(at.into()).await,
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    frames: u64,
    bytes: u64,
    lateness_us: Vec<u32>,
    first_write: Option<Instant>,
    last_write: Option<Instant>,
    error: Option<String>,
}

enum Socket {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Socket {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.write_all(bytes).await,
            Self::Udp(socket) => socket.send(bytes).await.map(|_| ()),
        }
    }
}

/// Opens the connections, sends, and returns what was sent.
pub async fn run(options: &LoadOptions, progress: Arc<Progress>) -> anyhow::Result<Summary> {
    options.validate()?;
    let n = options.connections;
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;

    // Phase 1: open every connection, a bounded number at a time.
    let mut sockets: Vec<Option<Socket>> = (0..n).map(|_| None).collect();
    let mut opening = tokio::task::JoinSet::new();
    let mut next = 0;
    let connect_start = Instant::now();
    while next < n || !opening.is_empty() {
        while next < n && opening.len() < CONNECT_CONCURRENCY {
            if options.connect_rate > 0 {
                let due = connect_start
                    + Duration::from_secs_f64(next as f64 / options.connect_rate as f64);
                if due > Instant::now() {
                    if opening.is_empty() {
                        tokio::time::sleep_until(due.into()).await;
                    } else {
                        break;
                    }
                }
            }
            let (target, protocol, index) = (options.target, options.protocol, next);
            opening.spawn(async move { (index, open(protocol, target).await) });
            next += 1;
        }
        let Some(joined) = opening.join_next().await else {
            break;
        };
        match joined.context("connect task")? {
            (index, Ok(socket)) => {
                progress.connected.fetch_add(1, Ordering::Relaxed);
                sockets[index] = Some(socket);
            }
            (_, Err(error)) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let connected = sockets.iter().filter(|s| s.is_some()).count();
    if connected == 0 {
        bail!(
            "no connection to {} could be opened: {}",
            options.target,
            first_error.unwrap_or_default()
        );
    }

    // Phase 2: every connection sends its share from a common start.
    let start = Instant::now();
    let _ = progress.sending_since.set(start);
    let deadline = options.duration.map(|d| start + Duration::from_secs_f64(d));
    let per_connection_rate = (options.rate > 0).then(|| options.rate as f64 / n as f64);
    let batch = options.batch();
    // One frame per write at a rate: each frame goes when it is due, as a device's would, to
    // the tens of microseconds (tokio's timer would send every frame due within one
    // millisecond together), woken by the pacer.
    let one_frame_per_write = per_connection_rate.is_some() && batch == 1;
    let tick = match per_connection_rate {
        _ if one_frame_per_write => Duration::ZERO,
        Some(rate) => Duration::from_secs_f64(TARGET_FRAMES_PER_WRITE / rate.max(1e-3))
            .clamp(MIN_TICK, MAX_TICK),
        None => MIN_TICK,
    };
    let pacer = if one_frame_per_write {
        Some(Arc::new(
            Pacer::start().context("starting the pacer thread")?,
        ))
    } else {
        None
    };
    let mut senders = tokio::task::JoinSet::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let Some(socket) = socket else {
            continue;
        };
        let quota = match options.count {
            Some(count) => count / n as u64 + u64::from((index as u64) < count % n as u64),
            None => u64::MAX,
        };
        // Spread the connections' writes evenly over the time between two writes of one
        // connection, as independent devices are: starting them together would send every
        // connection's frame in one burst each period and measure the burst, not the fleet.
        let period = per_connection_rate.map_or(tick, |rate| {
            tick.max(Duration::from_secs_f64(1.0 / rate.max(1e-3)).min(Duration::from_secs(10)))
        });
        let offset = period.mul_f64(index as f64 / n as f64);
        let plan = Plan {
            index,
            quota,
            rate: per_connection_rate,
            batch,
            start: start + offset,
            deadline,
            tick,
            first_seq: options.first_seq,
            stride: n as u64,
            idle: options.idle,
            pacer: pacer.clone(),
        };
        let progress = progress.clone();
        senders.spawn(async move { (index, send(socket, plan, progress).await) });
    }
    let mut sent_per_connection = vec![0u64; n];
    let mut write_lateness_us = Vec::new();
    let (mut frames, mut bytes) = (0u64, 0u64);
    let (mut first_write, mut last_write): (Option<Instant>, Option<Instant>) = (None, None);
    while let Some(joined) = senders.join_next().await {
        let (index, outcome) = joined.context("sender task")?;
        sent_per_connection[index] = outcome.frames;
        write_lateness_us.extend(outcome.lateness_us);
        frames += outcome.frames;
        bytes += outcome.bytes;
        if let Some(error) = outcome.error {
            errors += 1;
            first_error.get_or_insert(error);
        }
        first_write = match (first_write, outcome.first_write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_write = last_write.max(outcome.last_write);
    }
    let elapsed = match (first_write, last_write) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Summary {
        protocol: options.protocol,
        target: options.target,
        connections: n,
        connected,
        target_rate: options.rate,
        frames_sent: frames,
        bytes_sent: bytes,
        elapsed_s: elapsed,
        rate: if elapsed > 0.0 {
            frames as f64 / elapsed
        } else {
            0.0
        },
        errors,
        first_error,
        sent_per_connection,
        write_lateness_us: {
            write_lateness_us.sort_unstable();
            write_lateness_us
        },
    })
}

async fn open(protocol: Protocol, target: SocketAddr) -> anyhow::Result<Socket> {
    match protocol {
        Protocol::Tcp => {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
                .await
                .with_context(|| format!("connecting to {target} timed out"))?
                .with_context(|| format!("cannot connect to {target}"))?;
            stream.set_nodelay(true)?;
            Ok(Socket::Tcp(stream))
        }
        Protocol::Udp => {
            let local: SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(target).await?;
            Ok(Socket::Udp(socket))
        }
    }
}

async fn send(mut socket: Socket, plan: Plan, progress: Arc<Progress>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut buffer = vec![0u8; plan.batch * FRAME_LEN];
    plan.wait_until(plan.start).await;
    let quota = if plan.idle { 1 } else { plan.quota };
    while outcome.frames < quota {
        let now = Instant::now();
        if plan.deadline.is_some_and(|d| now >= d) || progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let due = match plan.rate {
            // The first frame goes at the start; then `rate` per second.
            Some(rate) => (now.duration_since(plan.start).as_secs_f64() * rate) as u64 + 1,
            None => u64::MAX,
        };
        let frames = due
            .min(quota)
            .saturating_sub(outcome.frames)
            .min(plan.batch as u64) as usize;
        if frames == 0 {
            // Sleep until the next frame is due, and at least a tick so that writes of several
            // frames fill up. Polling every tick instead would wake each of 10,000 slow
            // connections 50 times a second and make the generator the bottleneck.
            let next_due = plan.due_at(outcome.frames).unwrap_or(now);
            plan.wait_until(next_due.max(now + plan.tick)).await;
            continue;
        }
        if let Some(due_at) = plan.due_at(outcome.frames) {
            let late = now.saturating_duration_since(due_at).as_micros();
            outcome
                .lateness_us
                .push(u32::try_from(late).unwrap_or(u32::MAX));
        }
        let sent_us = now_us();
        for (i, frame) in buffer.chunks_exact_mut(FRAME_LEN).take(frames).enumerate() {
            let seq = plan.first_seq
                + plan.index as u64
                + (outcome.frames + i as u64).saturating_mul(plan.stride);
            encode_frame(frame, seq, sent_us, plan.index);
        }
        let bytes = &buffer[..frames * FRAME_LEN];
        // A write is never cut short (that would send frames it does not count), but one that
        // the peer does not take within WRITE_GRACE after the deadline is given up as an error.
        let limit = plan.deadline.map_or(now, |d| d.max(now)) + WRITE_GRACE;
        let result = tokio::time::timeout_at(limit.into(), socket.send(bytes))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write not taken in time; its frames are not counted",
                ))
            });
        if let Err(error) = result {
            outcome.error = Some(format!("connection {}: {error}", plan.index));
            break;
        }
        let written = Instant::now();
        outcome.first_write.get_or_insert(now);
        outcome.last_write = Some(written);
        outcome.frames += frames as u64;
        outcome.bytes += bytes.len() as u64;
        progress
            .frames_sent
            .fetch_add(frames as u64, Ordering::Relaxed);
        if plan.rate.is_none() {
            // As fast as possible, but let the other connections on this thread have a turn.
            tokio::task::yield_now().await;
        }
    }
    if plan.idle {
        if let Some(deadline) = plan.deadline {
            while Instant::now() < deadline && !progress.stop.load(Ordering::Relaxed) {
                let step = Instant::now() + Duration::from_millis(50);
                tokio::time::sleep_until(step.min(deadline).into()).await;
            }
        }
    }
    drop(socket);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let mut frame = [0u8; FRAME_LEN];
        encode_frame(&mut frame, 1234, 1_795_613_632_556_789, 17);
        assert_eq!(&frame, b"00001234,13632556789,7\n");
        assert_eq!(decode_frame(&frame), Some((1234, 13_632_556_789, 7)));
        assert_eq!(decode_frame(&frame[..22]), Some((1234, 13_632_556_789, 7)));
        assert_eq!(decode_frame(b"0000123413632556789,7\n"), None);
    }

    #[test]
    fn send_time_is_restored_from_the_receiver_clock() {
        let sent = 1_795_613_632_556_789;
        let field = sent % TIME_MODULUS_US;
        assert_eq!(unwrap_sent_us(field, sent), sent);
        assert_eq!(unwrap_sent_us(field, sent + 2_500), sent);
        // Across a wrap of the 11-digit field.
        let sent = 1_799_999_999_999_990;
        let field = sent % TIME_MODULUS_US;
        assert_eq!(unwrap_sent_us(field, sent + 30), sent);
    }

    #[test]
    fn digits() {
        assert_eq!(parse_digits(b"00000042"), Some(42));
        assert_eq!(parse_digits(b""), None);
        assert_eq!(parse_digits(b"12a"), None);
    }

    #[test]
    fn the_config_slices_the_three_keys() {
        let text = socket_json(Protocol::Tcp, 0, 1024).to_string();
        let built = connector_core::load::load_str(&text).unwrap().built;
        let mut frame = [0u8; FRAME_LEN];
        encode_frame(&mut frame, 99, 123_456_789, 3);
        let device = &built.devices.devices()[0];
        let data = device.converter.convert(&frame[..FRAME_LEN - 1], 0);
        let values: Vec<(String, String)> = data
            .telemetry
            .iter()
            .map(|p| (p.key.to_string(), p.value.as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            values,
            [
                ("seq".to_owned(), "00000099".to_owned()),
                ("sent_us".to_owned(), "00123456789".to_owned()),
                ("conn".to_owned(), "3".to_owned()),
            ]
        );
    }

    #[test]
    fn the_unframed_config_reads_a_whole_frame_with_its_attribute() {
        let text = socket_json_unframed(Protocol::Tcp, 0, 1024).to_string();
        let built = connector_core::load::load_str(&text).unwrap().built;
        assert!(built.framing.is_none());
        let mut frame = [0u8; FRAME_LEN];
        encode_frame(&mut frame, 99, 123_456_789, 3);
        let data = built.devices.devices()[0].converter.convert(&frame, 0);
        assert_eq!(data.telemetry.len(), 3);
        let attributes: Vec<(String, String)> = data
            .attributes
            .iter()
            .map(|p| (p.key.to_string(), p.value.as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(attributes, [("connection".to_owned(), "3".to_owned())]);
    }

    #[tokio::test]
    async fn sends_the_requested_count_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut all = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut bytes = Vec::new();
                stream.read_to_end(&mut bytes).await.unwrap();
                all.extend(bytes.chunks(FRAME_LEN).map(|f| decode_frame(f).unwrap().0));
            }
            all.sort_unstable();
            all
        });
        let mut options = LoadOptions::new(target, 2, 0, Duration::from_secs(10));
        options.count = Some(101);
        options.batch = Some(7);
        let summary = run(&options, Arc::default()).await.unwrap();
        assert_eq!(summary.frames_sent, 101);
        assert_eq!(summary.sent_per_connection, [51, 50]);
        assert_eq!(reader.await.unwrap(), (0..101).collect::<Vec<u64>>());
        assert!(summary.write_lateness_us.is_empty(), "no rate, no lateness");
    }

    #[tokio::test]
    async fn a_stalled_generator_reports_how_late_it_wrote() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).await.unwrap();
            bytes.len() / FRAME_LEN
        });
        // 20 frames, one every 5 ms; the runtime the writes run on is blocked for 60 ms from
        // 12 ms after the first write was due, so the frames due meanwhile go out late.
        let mut options = LoadOptions::new(target, 1, 200, Duration::from_secs(10));
        options.count = Some(20);
        options.batch = Some(1);
        let progress = Arc::new(Progress::default());
        tokio::spawn({
            let progress = progress.clone();
            async move {
                for _ in 0..10_000 {
                    if let Some(start) = progress.sending_since.get() {
                        tokio::time::sleep_until((*start + Duration::from_millis(12)).into()).await;
                        std::thread::sleep(Duration::from_millis(60));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let summary = run(&options, progress).await.unwrap();
        assert_eq!(reader.await.unwrap(), 20);
        let late = &summary.write_lateness_us;
        assert_eq!(late.len(), 20, "one entry per write");
        assert!(late.is_sorted());
        assert!(late[19] >= 40_000, "the stall shows: {late:?}");
        assert!(late[0] < 20_000, "the first writes were on time: {late:?}");
    }
}
