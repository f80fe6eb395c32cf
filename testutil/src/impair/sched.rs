//! Sends packets when they are due: a thread with a time-ordered queue (what the kernel's
//! netem does for delay and jitter, in user space).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::lock;

struct Queue {
    heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    seq: u64,
    stop: bool,
}

/// A send thread; packets due at the same instant keep their order.
pub struct Scheduler {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scheduler {
    pub fn start(mut send: impl FnMut(Vec<u8>) + Send + 'static) -> Self {
        let queue = Arc::new((
            Mutex::new(Queue {
                heap: BinaryHeap::new(),
                seq: 0,
                stop: false,
            }),
            Condvar::new(),
        ));
        let q = queue.clone();
        let thread = std::thread::spawn(move || {
            let (m, cv) = &*q;
            let mut g = lock(m);
            loop {
                let now = Instant::now();
                match g.heap.peek() {
                    Some(Reverse((due, _, _))) if *due <= now => {
                        let Reverse((_, _, p)) = g.heap.pop().expect("peeked");
                        drop(g);
                        send(p);
                        g = lock(m);
                    }
                    _ if g.stop => break,
                    Some(Reverse((due, _, _))) => {
                        let wait = *due - now;
                        g = cv
                            .wait_timeout(g, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None => g = cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                }
            }
        });
        Scheduler {
            queue,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Sends `packet` at `due` (at once if it is past).
    pub fn push(&self, due: Instant, packet: Vec<u8>) {
        let (m, cv) = &*self.queue;
        let mut g = lock(m);
        let seq = g.seq;
        g.seq += 1;
        g.heap.push(Reverse((due, seq, packet)));
        cv.notify_one();
    }

    /// Packets waiting.
    pub fn pending(&self) -> usize {
        lock(&self.queue.0).heap.len()
    }

    /// Sends what is already due, drops the rest, stops the thread.
    pub fn finish(&self) {
        let (m, cv) = &*self.queue;
        {
            let mut g = lock(m);
            let now = Instant::now();
            g.heap.retain(|Reverse((due, _, _))| *due <= now);
            g.stop = true;
            cv.notify_one();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.finish();
    }
}
