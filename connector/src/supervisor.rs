//! Supervision of the connector's core tasks (listener, uplink, MQTT session, downlink, remote
//! logs, probes, reload watcher): a panic in any of them is reported, and the binary then exits
//! with a non-zero code so that its supervisor (Kubernetes, systemd) restarts it, instead of
//! leaving a process that looks healthy but no longer moves data. Device connection tasks are
//! not core: a panic there closes that one connection.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::error;

/// What a core task's panic said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub task: &'static str,
    pub message: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} task panicked: {}", self.task, self.message)
    }
}

/// Spawns core tasks and hears about their panics.
#[derive(Clone)]
pub struct Supervisor {
    failures: mpsc::UnboundedSender<TaskFailure>,
}

/// Where a [`Supervisor`]'s failures arrive.
pub struct Failures(mpsc::UnboundedReceiver<TaskFailure>);

impl Supervisor {
    pub fn new() -> (Self, Failures) {
        let (failures, receiver) = mpsc::unbounded_channel();
        (Self { failures }, Failures(receiver))
    }

    /// Spawns `task`; a panic in it is logged and reported to [`Failures::next`].
    pub fn spawn<F>(&self, task: &'static str, future: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let failures = self.failures.clone();
        tokio::spawn(async move {
            let supervised = async {
                injected_panic(task);
                future.await
            };
            if let Err(panic) = AssertUnwindSafe(supervised).catch_unwind().await {
                let failure = TaskFailure {
                    task,
                    message: panic_message(panic.as_ref()),
                };
                error!(task, message = %failure.message, "core task panicked; the connector stops");
                let _ = failures.send(failure);
            }
        })
    }
}

impl Failures {
    /// The first core task that panicked (pending forever while none does).
    pub async fn next(&mut self) -> TaskFailure {
        match self.0.recv().await {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Fault injection for the end-to-end test of supervision, in debug builds only:
/// `SOCKET_CONNECTOR_PANIC_TASK=<task>` makes that core task panic when it starts.
#[cfg(debug_assertions)]
fn injected_panic(task: &str) {
    if std::env::var("SOCKET_CONNECTOR_PANIC_TASK").is_ok_and(|name| name == task) {
        panic!("injected by SOCKET_CONNECTOR_PANIC_TASK");
    }
}

#[cfg(not(debug_assertions))]
fn injected_panic(_task: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_a_finishing_one_is_not() {
        let (supervisor, mut failures) = Supervisor::new();
        supervisor.spawn("quiet", async {}).await.expect("joins");
        let failing = supervisor.spawn("uplink", async {
            panic!("index out of bounds");
        });
        failing.await.expect("the panic is caught inside the task");
        let failure = tokio::time::timeout(std::time::Duration::from_secs(5), failures.next())
            .await
            .expect("reported");
        assert_eq!(
            failure,
            TaskFailure {
                task: "uplink",
                message: "index out of bounds".to_owned()
            }
        );
        assert_eq!(
            failure.to_string(),
            "the uplink task panicked: index out of bounds"
        );
    }
}
