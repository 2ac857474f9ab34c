//! Read coalescing: a runtime worker that runs out of work waits out the rest of a short window
//! before it blocks on its sockets, so that the frames devices send within that window are read
//! in one wake-up instead of one each; a NIC's interrupt coalescing does the same one layer down.
//!
//! A fleet of slow devices sends frames at independent instants. Without coalescing, the
//! connector goes to sleep after every frame and the next one wakes it: 10,000 devices × 1
//! frame/s cost 10,000 wake-ups a second, which took more CPU than everything else the connector
//! does with the frames (docs/benchmarks.md#read-coalescing). Each wake-up now reads what arrived
//! during the window, and the frames of one wake-up go out in one publish.
//!
//! The pause applies only while frames come faster than the window (the worker's last wait for
//! IO was shorter than it), so a lone frame after a quiet spell is read at once: coalescing adds
//! latency only where it saves wake-ups. Each frame waits at most about one window for its read.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tokio::runtime::Builder;

use crate::metrics::metrics;

/// The window without `--read-coalescing-ms`. One worker (the current-thread scheduler, which
/// publishes all that one wake-up read): 3 ms, which packs 10,000 devices × 1 frame/s about 31 to
/// a publish at about 1.9 ms of median latency, for 0.87 of the CPU of 2 ms. Several workers:
/// 2 ms, as 3 ms saved them little CPU and took `unframed`'s p99 above 5 ms
/// (docs/benchmarks.md#the-window-with-one-worker-3-ms-2026-12-07).
pub fn default_window(workers: usize) -> Duration {
    if workers == 1 {
        Duration::from_millis(3)
    } else {
        Duration::from_millis(2)
    }
}

thread_local! {
    /// When this worker last woke, and how long it had waited for IO before that.
    static WORKER: Cell<WorkerState> = const { Cell::new(WorkerState::new()) };
}

#[derive(Debug, Clone, Copy)]
struct WorkerState {
    parked_at: Option<Instant>,
    woke_at: Option<Instant>,
    last_wait: Option<Duration>,
}

impl WorkerState {
    const fn new() -> Self {
        Self {
            parked_at: None,
            woke_at: None,
            last_wait: None,
        }
    }
}

/// Makes the runtime's workers coalesce reads within `window`, and counts their wake-ups in
/// `socket_connector_worker_wakeups_total`. A zero window only counts.
pub fn install(builder: &mut Builder, window: Duration) {
    builder
        .on_thread_park(move || {
            let now = Instant::now();
            let state = WORKER.get();
            let busy = state.woke_at.map_or(Duration::ZERO, |woke| now - woke);
            let pause = pause_before_park(window, state.last_wait, busy);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            WORKER.set(WorkerState {
                parked_at: Some(Instant::now()),
                ..state
            });
        })
        .on_thread_unpark(|| {
            let now = Instant::now();
            let state = WORKER.get();
            WORKER.set(WorkerState {
                parked_at: None,
                woke_at: Some(now),
                last_wait: state.parked_at.map(|parked| now - parked),
            });
            metrics().worker_wakeups.inc();
        });
}

/// How long a worker about to block on IO pauses first: the rest of the window since it woke,
/// while its last wait was shorter than the window (frames come faster, so pausing gathers
/// several into one wake-up); nothing after a longer wait, or before its first.
fn pause_before_park(window: Duration, last_wait: Option<Duration>, busy: Duration) -> Duration {
    match last_wait {
        Some(waited) if waited < window => window.saturating_sub(busy),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_worker_coalesces_longer_than_several() {
        assert_eq!(default_window(1), Duration::from_millis(3));
        assert_eq!(default_window(2), Duration::from_millis(2));
        assert_eq!(default_window(16), Duration::from_millis(2));
    }

    #[test]
    fn pauses_only_while_frames_come_faster_than_the_window() {
        // Busy: the last wait was short, so the worker pauses for the rest of the window.
        assert_eq!(
            pause_before_park(WINDOW, Some(Duration::ZERO), MS / 4),
            WINDOW - MS / 4
        );
        assert_eq!(pause_before_park(WINDOW, Some(MS), Duration::ZERO), WINDOW);
        // Work that took the whole window leaves no pause.
        assert_eq!(
            pause_before_park(WINDOW, Some(MS), WINDOW * 2),
            Duration::ZERO
        );
        // Sparse traffic, the first park, and no window: no pause.
        assert_eq!(
            pause_before_park(WINDOW, Some(WINDOW * 3), MS),
            Duration::ZERO
        );
        assert_eq!(pause_before_park(WINDOW, None, MS), Duration::ZERO);
        assert_eq!(
            pause_before_park(Duration::ZERO, Some(Duration::ZERO), Duration::ZERO),
            Duration::ZERO
        );
    }

    /// Runs a one-worker runtime with `window` while a thread sends 400 messages 100 µs apart,
    /// as 10,000 devices at 1 frame/s each would; returns the worker's wake-ups and how long
    /// the sending took.
    fn wakeups_for(window: Duration) -> (u64, Duration) {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).enable_all();
        install(&mut builder, window);
        let runtime = builder.build().unwrap();
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let received = runtime.spawn(async move {
            let mut received = 0;
            while receiver.recv().await.is_some() {
                received += 1;
            }
            received
        });
        std::thread::sleep(Duration::from_millis(20));
        let before = metrics().worker_wakeups.get();
        let start = Instant::now();
        for i in 0..400u32 {
            let due = start + Duration::from_micros(100) * i;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            sender.send(i).unwrap();
        }
        let sending = start.elapsed();
        drop(sender);
        assert_eq!(runtime.block_on(received).unwrap(), 400);
        (metrics().worker_wakeups.get() - before, sending)
    }

    /// The only test that installs the hooks: the wake-up counter is the process's.
    #[test]
    fn a_stream_of_frames_wakes_the_worker_once_per_window() {
        let (coalesced, sending) = wakeups_for(WINDOW);
        // The first two messages wake it each (the wait before them was long), then one wake-up
        // per window (the last one partial), and the end of the stream.
        let bound = (sending.as_micros() / WINDOW.as_micros()) as u64 + 4;
        let (uncoalesced, _) = wakeups_for(Duration::ZERO);
        eprintln!(
            "{coalesced} wake-ups coalesced (at most {bound}), {uncoalesced} without, {sending:?}"
        );
        assert!(
            coalesced <= bound,
            "{coalesced} wake-ups, more than {bound}"
        );
        // Without a window the same messages wake the worker far more often.
        assert!(
            uncoalesced > 3 * bound,
            "{uncoalesced} wake-ups without coalescing"
        );
    }
}
