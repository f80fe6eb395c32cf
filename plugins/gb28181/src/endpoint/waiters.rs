//! Callers that wait for something the endpoint's threads bring (a device registering, a
//! transaction's final response, a device's INVITE) sleep on one condition variable instead
//! of polling: every handled message, timer tick that delivered something, and
//! [`Endpoint::wake_waiters`] (an element's `unlock`) moves a generation counter and wakes
//! them; each checks what it waits for and sleeps again. A change between the check and the
//! sleep moved the counter, so nothing is missed.

use super::Endpoint;
use gst_ipcam_common::sync::lock;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Default)]
pub(super) struct Waiters {
    generation: Mutex<u64>,
    changed: Condvar,
}

/// The wait was cancelled (the caller's `cancelled` said so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl Endpoint {
    /// Wakes every [`wait_until`](Self::wait_until) caller to look again; call it after
    /// setting what a caller's `cancelled` reads (an element's `unlock`).
    pub fn wake_waiters(&self) {
        let mut g = lock(&self.waiters.generation);
        *g = g.wrapping_add(1);
        self.waiters.changed.notify_all();
    }

    /// Waits until `ready` gives a value (`Ok(Some)`), `deadline` passes (`Ok(None)`) or
    /// `cancelled` is true (`Err`), asleep between the endpoint's changes. `ready` and
    /// `cancelled` run without the waiters' lock (they may take the endpoint's).
    pub fn wait_until<T>(
        &self,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Result<Option<T>, Cancelled> {
        loop {
            let seen = *lock(&self.waiters.generation);
            if cancelled() {
                return Err(Cancelled);
            }
            if let Some(v) = ready() {
                return Ok(Some(v));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let g = lock(&self.waiters.generation);
            if *g == seen {
                drop(
                    self.waiters
                        .changed
                        .wait_timeout(g, left)
                        .unwrap_or_else(|e| e.into_inner()),
                );
            }
        }
    }
}
