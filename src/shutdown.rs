//! Graceful shutdown: stop accepting, let open connections finish until the drain
//! deadline, then cut the rest.
//!
//! SIGTERM and SIGINT both drain (the binary wires them); a second signal during the
//! drain cuts at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tokens and the task set every listener and connection shares.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled first: listeners stop accepting.
    pub stop_accepting: CancellationToken,
    /// Cancelled at the drain deadline: connections still open are closed.
    pub cut: CancellationToken,
    /// Every accept loop and connection task.
    pub tracker: TaskTracker,
}

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still open at the deadline, and cut.
    pub cut: usize,
}

impl Shutdown {
    /// Stops accepting, waits up to `drain` for tasks to finish, then cuts the rest and
    /// waits (briefly) for them to close.
    pub async fn drain(
        &self,
        drain: Duration,
        cut_now: impl std::future::Future<Output = ()>,
    ) -> DrainReport {
        self.stop_accepting.cancel();
        self.tracker.close();
        tokio::select! {
            () = self.tracker.wait() => return DrainReport { cut: 0 },
            () = tokio::time::sleep(drain) => {}
            () = cut_now => {}
        }
        // Accept loops have exited by now; what is left are connections.
        let cut = self.tracker.len();
        self.cut.cancel();
        // Cut connections close within a second (a last close_notify at most); do not let
        // a stuck one hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        DrainReport { cut }
    }
}
