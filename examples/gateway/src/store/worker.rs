//! The store's writer thread: the gateway's event dispatcher hands it [`Write`]s through a
//! bounded queue ([`StoreWorker::send`] never blocks; beyond [`QUEUE`] waiting writes they
//! are dropped and counted), it applies what has queued up in one transaction, and every
//! `tick` it asks for periodic writes (last keepalive times). A database error is printed and
//! counted; the worker and the gateway go on.

use super::{Store, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Writes waiting for the worker at most.
pub const QUEUE: usize = 4096;
/// Writes applied in one transaction at most.
pub const BATCH: usize = 512;

/// Counters of the worker.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Writes applied.
    pub writes: AtomicU64,
    /// Transactions that failed (their writes are lost).
    pub errors: AtomicU64,
    /// Writes dropped: queue full, or refused by a cap.
    pub dropped: AtomicU64,
}

pub struct StoreWorker {
    sender: StoreSender,
    thread: Option<JoinHandle<()>>,
}

/// Queues writes for the worker (cheap to clone; `None` in the queue asks it to stop).
#[derive(Clone)]
pub struct StoreSender {
    tx: SyncSender<Option<Write>>,
    stats: Arc<StoreStats>,
}

impl StoreSender {
    /// Queues `w` without waiting; false (and counted) when the queue is full or stopped.
    pub fn send(&self, w: Write) -> bool {
        match self.tx.try_send(Some(w)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }
}

fn report(stats: &StoreStats, what: &str) {
    // The first error, then every 100th: a broken disk must not flood the log.
    let n = stats.errors.fetch_add(1, Ordering::Relaxed);
    if n.is_multiple_of(100) {
        eprintln!("[gateway] warning: store: {what} ({} errors so far)", n + 1);
    }
}

fn apply(store: &mut Store, stats: &StoreStats, batch: &mut Vec<Write>) {
    if batch.is_empty() {
        return;
    }
    match store.apply(batch) {
        Ok(a) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .writes
                .fetch_add(batch.len() as u64 - a.refused, Ordering::Relaxed);
            stats.dropped.fetch_add(a.refused, Ordering::Relaxed);
        }
        Err(e) => report(stats, &format!("{}: {e}", store.path().display())),
    }
    batch.clear();
}

impl StoreWorker {
    /// Starts the worker over `store`; `tick` is called every `every` for periodic writes.
    pub fn start(
        mut store: Store,
        every: Duration,
        mut tick: impl FnMut() -> Vec<Write> + Send + 'static,
    ) -> std::io::Result<StoreWorker> {
        let (tx, rx): (SyncSender<Option<Write>>, Receiver<Option<Write>>) =
            std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(StoreStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("gateway-store".into())
            .spawn(move || {
                let mut next_tick = Instant::now() + every;
                let mut batch = Vec::with_capacity(BATCH);
                loop {
                    let wait = next_tick.saturating_duration_since(Instant::now());
                    let mut ended = match rx.recv_timeout(wait) {
                        Ok(Some(w)) => {
                            batch.push(w);
                            false
                        }
                        Ok(None) | Err(RecvTimeoutError::Disconnected) => true,
                        Err(RecvTimeoutError::Timeout) => false,
                    };
                    while !ended && batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(Some(w)) => batch.push(w),
                            Ok(None) => ended = true,
                            Err(_) => break,
                        }
                    }
                    if ended || Instant::now() >= next_tick {
                        next_tick = Instant::now() + every;
                        batch.extend(tick());
                    }
                    apply(&mut store, &st, &mut batch);
                    if ended {
                        return;
                    }
                }
            })?;
        Ok(StoreWorker {
            sender: StoreSender { tx, stats },
            thread: Some(thread),
        })
    }

    pub fn sender(&self) -> StoreSender {
        self.sender.clone()
    }

    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.sender.stats
    }

    /// Writes what is queued (and a last tick), then ends the thread.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            // Waits for room in a full queue: the worker is draining it.
            let _ = self.sender.tx.send(None);
            let _ = t.join();
        }
    }
}

impl Drop for StoreWorker {
    fn drop(&mut self) {
        self.stop();
    }
}
