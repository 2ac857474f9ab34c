//! Wakes the generator's devices at the instants their frames are due, with the precision of the
//! OS's sleep (tens of microseconds). tokio's timer has a granularity of one millisecond: with
//! it, every device whose frame fell due within the same millisecond wrote at once (10 devices at
//! a time for 10,000 devices × 1 frame/s), and the connector was measured on bursts that
//! independent devices do not send. It then woke once per burst instead of once per frame, and
//! its CPU looked about half of what evenly arriving frames cost (docs/benchmarks.md).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the pacer's thread sleeps with nothing due before it looks again whether it is
/// stopped (a stop also wakes it at once).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// A thread that wakes waiting tasks at their instants.
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Due>>,
    /// Orders tasks due at the same instant by when they asked.
    asked: u64,
    stopped: bool,
}

struct Due {
    at: Instant,
    asked: u64,
    waker: Waker,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.asked) == (other.at, other.asked)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.asked).cmp(&(other.at, other.asked))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pacer's thread: wakes what is due, sleeps until the next is, until stopped.
    fn run(&self) {
        let mut state = self.lock();
        while !state.stopped {
            let now = Instant::now();
            let mut woken = Vec::new();
            while let Some(Reverse(due)) = state.due.peek() {
                if due.at > now {
                    break;
                }
                if let Some(Reverse(due)) = state.due.pop() {
                    woken.push(due.waker);
                }
            }
            if !woken.is_empty() {
                drop(state);
                woken.into_iter().for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            let wait = state
                .due
                .peek()
                .map_or(IDLE_WAIT, |Reverse(due)| due.at - now);
            state = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Pacer {
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("pacer".to_owned())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Resolves at `at`, or at once when it has passed.
    pub fn until(&self, at: Instant) -> Until<'_> {
        Until {
            shared: &self.shared,
            at,
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The future of [`Pacer::until`].
pub struct Until<'a> {
    shared: &'a Shared,
    at: Instant,
}

impl Future for Until<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let mut state = self.shared.lock();
        let earliest = state.due.peek().map(|Reverse(due)| due.at);
        state.asked += 1;
        let asked = state.asked;
        state.due.push(Reverse(Due {
            at: self.at,
            asked,
            waker: cx.waker().clone(),
        }));
        drop(state);
        // The thread sleeps until the earliest it knows of: a new earliest must wake it.
        if earliest.is_none_or(|earliest| self.at < earliest) {
            self.shared.changed.notify_one();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks due at distinct instants less than tokio's 1 ms apart wake at their own instants,
    /// in order, not together at a millisecond tick.
    #[tokio::test(flavor = "current_thread")]
    async fn tasks_wake_at_their_own_instants() {
        let pacer = Arc::new(Pacer::start().unwrap());
        let start = Instant::now() + Duration::from_millis(20);
        let step = Duration::from_micros(200);
        let mut tasks = tokio::task::JoinSet::new();
        for i in (0..20u32).rev() {
            let pacer = pacer.clone();
            let at = start + step * i;
            tasks.spawn(async move {
                pacer.until(at).await;
                (i, Instant::now())
            });
        }
        let mut woke = tasks.join_all().await;
        woke.sort_by_key(|(_, at)| *at);
        let order: Vec<u32> = woke.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
        for (i, at) in woke {
            assert!(at >= start + step * i, "task {i} woke early");
        }
    }
}
