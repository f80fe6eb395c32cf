//! What the endpoint tells its subscribers, and the thread that calls them (bounded queue,
//! unauthenticated-request events rate limited).

use super::*;
use std::sync::{Condvar, OnceLock};

/// What subscribers are told.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointEvent {
    /// Registrar events: registered, unregistered, online, offline, auth failures...
    Registrar(registrar::Event),
    Catalog {
        device_id: String,
        sn: u32,
        sum_num: u32,
        items: Vec<CatalogItem>,
    },
    DeviceInfo {
        sn: u32,
        info: DeviceInfo,
    },
    DeviceStatus {
        sn: u32,
        status: DeviceStatus,
    },
    /// RecordInfo answer, merged over its messages. `device_id` is the registered device that
    /// answered (for an NVR or a lower platform, not the channel asked about: each item names
    /// its channel).
    RecordInfo {
        device_id: String,
        sn: u32,
        sum_num: u32,
        items: Vec<RecordItem>,
    },
    /// MediaStatus notification (121 = end of the file played back / downloaded) from the
    /// registered device `device_id` about `channel_id` (its DeviceID: the device's own ID
    /// for a camera, a channel's for an NVR or a lower platform).
    MediaStatus {
        device_id: String,
        channel_id: String,
        notify_type: u32,
    },
    /// Catalog items of `device_id` that were dropped: `invalid` IDs refused by the ID policy
    /// (`example`: the first, printable), `over_limit` beyond `max_channels_per_device`.
    CatalogItemsDropped {
        device_id: String,
        invalid: u32,
        over_limit: u32,
        example: String,
    },
    /// Catalog changes a subscribed device notified (each item with its `event`: ADD, DEL,
    /// UPDATE, ON, OFF, VLOST, DEFECT); items with invalid IDs are dropped first.
    CatalogChanged {
        device_id: String,
        items: Vec<CatalogItem>,
    },
    /// An alarm from `device_id` (the alarm's own `device_id` may be one of its channels).
    Alarm {
        device_id: String,
        alarm: Alarm,
    },
    MobilePosition {
        device_id: String,
        position: MobilePosition,
    },
    /// A subscription of ours changed state.
    Subscription {
        device_id: String,
        /// Catalog, Alarm or MobilePosition.
        event: String,
        change: Change,
    },
}

impl EndpointEvent {
    /// The device the event is about.
    pub fn device_id(&self) -> &str {
        match self {
            EndpointEvent::Registrar(e) => match e {
                registrar::Event::Registered { device_id, .. }
                | registrar::Event::Unregistered { device_id, .. }
                | registrar::Event::Online { device_id }
                | registrar::Event::Offline { device_id }
                | registrar::Event::KeepaliveRefused { device_id, .. }
                | registrar::Event::AuthFailed { device_id, .. }
                | registrar::Event::SourceBlocked { device_id, .. }
                | registrar::Event::ForgedRequest { device_id, .. } => device_id,
                registrar::Event::InvalidId { id, .. } => id,
            },
            EndpointEvent::Catalog { device_id, .. } => device_id,
            EndpointEvent::DeviceInfo { info, .. } => &info.device_id,
            EndpointEvent::DeviceStatus { status, .. } => &status.device_id,
            EndpointEvent::RecordInfo { device_id, .. } => device_id,
            EndpointEvent::MediaStatus { device_id, .. } => device_id,
            EndpointEvent::CatalogItemsDropped { device_id, .. }
            | EndpointEvent::CatalogChanged { device_id, .. }
            | EndpointEvent::Alarm { device_id, .. }
            | EndpointEvent::MobilePosition { device_id, .. }
            | EndpointEvent::Subscription { device_id, .. } => device_id,
        }
    }
}

/// Whether an event is about a request nobody authenticated (see [`REFUSAL_EVENTS_PER_S`]).
pub(super) fn is_refusal(e: &EndpointEvent) -> bool {
    matches!(
        e,
        EndpointEvent::Registrar(
            registrar::Event::AuthFailed { .. }
                | registrar::Event::SourceBlocked { .. }
                | registrar::Event::ForgedRequest { .. }
                | registrar::Event::InvalidId { .. }
                | registrar::Event::KeepaliveRefused { .. }
        )
    )
}

pub(super) fn wrap(events: Vec<registrar::Event>) -> Vec<EndpointEvent> {
    events.into_iter().map(EndpointEvent::Registrar).collect()
}

/// How far the dispatcher got: events queued and events every subscriber was called for,
/// so that a caller can wait until what was queued before it has been told (see
/// [`Endpoint::flush_events`]).
#[derive(Default)]
pub(super) struct Delivery {
    counts: Mutex<(u64, u64)>,
    delivered: Condvar,
    dispatcher: OnceLock<std::thread::ThreadId>,
}

impl Delivery {
    /// Queues `e` unless the queue is full (false then).
    pub(super) fn queue(&self, tx: &mpsc::SyncSender<EndpointEvent>, e: EndpointEvent) -> bool {
        let mut c = lock(&self.counts);
        let queued = tx.try_send(e).is_ok();
        if queued {
            c.0 += 1;
        }
        queued
    }

    fn done(&self) {
        lock(&self.counts).1 += 1;
        self.delivered.notify_all();
    }

    /// Waits (at most `wait`) until the events queued so far have been delivered; at once on
    /// the dispatcher thread itself (a subscriber waiting for its own thread would wait out
    /// `wait`).
    pub(super) fn flush(&self, wait: Duration) -> bool {
        if self.dispatcher.get() == Some(&std::thread::current().id()) {
            return false;
        }
        let c = lock(&self.counts);
        let target = c.0;
        let (c, _) = self
            .delivered
            .wait_timeout_while(c, wait, |c| c.1 < target)
            .unwrap_or_else(|e| e.into_inner());
        c.1 >= target
    }
}

/// Calls the subscribers for every queued event (the only thread that does).
pub(super) fn dispatch_loop(
    rx: mpsc::Receiver<EndpointEvent>,
    subscribers: Arc<Mutex<Vec<(u64, Subscriber)>>>,
    delivery: Arc<Delivery>,
    stop: Arc<AtomicBool>,
) {
    let _ = delivery.dispatcher.set(std::thread::current().id());
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => {
                let subs: Vec<Subscriber> =
                    lock(&subscribers).iter().map(|(_, s)| s.clone()).collect();
                for s in &subs {
                    s(&e);
                }
                delivery.done();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
    }
}
