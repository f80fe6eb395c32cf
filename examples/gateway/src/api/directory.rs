//! What the API knows about devices beyond their registration: the latest DeviceInfo,
//! DeviceStatus, Catalog and RecordInfo answer of each registered device, fed from the SIP endpoint's
//! events. Bounded: at most `max_devices` entries and `max_channels` catalog items each;
//! entries of unregistered devices are dropped. GStreamer-free; waiters are woken through a
//! tokio `Notify`.

use gst_ipcam_common::sync::lock;
use gstgb28181::core::manscdp::{CatalogItem, DeviceInfo, DeviceStatus, RecordItem};
use gstgb28181::core::notify::{Alarm, MobilePosition};
use gstgb28181::core::registrar::Event as RegEvent;
use gstgb28181::endpoint::EndpointEvent;
use std::collections::HashMap;
use std::sync::Mutex;

/// The latest answers of one device, each with the SN it answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub info: Option<(u32, DeviceInfo)>,
    pub status: Option<(u32, DeviceStatus)>,
    pub catalog: Option<(u32, Vec<CatalogItem>)>,
    /// The latest RecordInfo answer (at most [`MAX_RECORD_ITEMS`] items).
    pub records: Option<(u32, Vec<RecordItem>)>,
    /// The latest position report (MobilePosition subscription).
    pub position: Option<MobilePosition>,
    /// The latest alarms, oldest first, at most [`MAX_ALARMS`].
    pub alarms: std::collections::VecDeque<Alarm>,
    /// Catalog changes notified (subscription), oldest first, at most [`MAX_ALARMS`].
    pub catalog_changes: std::collections::VecDeque<CatalogItem>,
}

/// Alarms (and catalog changes) kept per device.
pub const MAX_ALARMS: usize = 100;

/// Recording items kept of one RecordInfo answer.
pub const MAX_RECORD_ITEMS: usize = 1000;

pub struct Directory {
    max_devices: usize,
    max_channels: usize,
    entries: Mutex<HashMap<String, Entry>>,
    changed: tokio::sync::Notify,
}

impl Directory {
    pub fn new(max_devices: usize, max_channels: usize) -> Directory {
        Directory {
            max_devices,
            max_channels,
            entries: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.entries)
    }

    /// Applies one endpoint event. `registered` tells whether a device is registered now
    /// (answers of others are not kept).
    pub fn apply(&self, ev: &EndpointEvent, registered: impl Fn(&str) -> bool) {
        let device = ev.device_id();
        {
            let mut map = self.lock();
            if let EndpointEvent::Registrar(RegEvent::Unregistered { device_id, .. }) = ev {
                map.remove(device_id);
                drop(map);
                self.changed.notify_waiters();
                return;
            }
            let relevant = matches!(
                ev,
                EndpointEvent::DeviceInfo { .. }
                    | EndpointEvent::DeviceStatus { .. }
                    | EndpointEvent::Catalog { .. }
                    | EndpointEvent::RecordInfo { .. }
                    | EndpointEvent::MobilePosition { .. }
                    | EndpointEvent::Alarm { .. }
                    | EndpointEvent::CatalogChanged { .. }
            );
            if !relevant || !registered(device) {
                return;
            }
            if !map.contains_key(device) && map.len() >= self.max_devices {
                return;
            }
            let e = map.entry(device.to_string()).or_default();
            match ev {
                EndpointEvent::DeviceInfo { sn, info } => e.info = Some((*sn, info.clone())),
                EndpointEvent::DeviceStatus { sn, status } => {
                    e.status = Some((*sn, status.clone()))
                }
                EndpointEvent::Catalog { sn, items, .. } => {
                    let items = items.iter().take(self.max_channels).cloned().collect();
                    e.catalog = Some((*sn, items));
                }
                EndpointEvent::RecordInfo { sn, items, .. } => {
                    let items = items.iter().take(MAX_RECORD_ITEMS).cloned().collect();
                    e.records = Some((*sn, items));
                }
                EndpointEvent::MobilePosition { position, .. } => {
                    e.position = Some(position.clone())
                }
                EndpointEvent::Alarm { alarm, .. } => {
                    if e.alarms.len() >= MAX_ALARMS {
                        e.alarms.pop_front();
                    }
                    e.alarms.push_back(alarm.clone());
                }
                EndpointEvent::CatalogChanged { items, .. } => {
                    for i in items.iter().take(MAX_ALARMS) {
                        if e.catalog_changes.len() >= MAX_ALARMS {
                            e.catalog_changes.pop_front();
                        }
                        e.catalog_changes.push_back(i.clone());
                    }
                }
                _ => {}
            }
        }
        self.changed.notify_waiters();
    }

    /// Forgets a device (deleted by the operator).
    pub fn remove(&self, device: &str) {
        self.lock().remove(device);
    }

    pub fn get(&self, device: &str) -> Option<Entry> {
        self.lock().get(device).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The catalog item describing `channel` of `device`, if its catalog lists it.
    pub fn channel(&self, device: &str, channel: &str) -> Option<CatalogItem> {
        self.lock()
            .get(device)?
            .catalog
            .as_ref()?
            .1
            .iter()
            .find(|i| i.device_id == channel)
            .cloned()
    }

    /// Waits (at most `timeout`) until `pick` finds something in `device`'s entry.
    pub async fn wait_for<T>(
        &self,
        device: &str,
        timeout: std::time::Duration,
        pick: impl Fn(&Entry) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.get(device).as_ref().and_then(&pick) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstgb28181::core::registrar::UnregisterReason;

    fn info(dev: &str, sn: u32) -> EndpointEvent {
        EndpointEvent::DeviceInfo {
            sn,
            info: DeviceInfo {
                device_id: dev.into(),
                manufacturer: "ACME".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn keeps_answers_of_registered_devices_bounded() {
        let d = Directory::new(2, 3);
        d.apply(&info("a", 1), |_| true);
        d.apply(&info("x", 1), |_| false);
        assert_eq!(d.len(), 1, "unregistered devices are not kept");
        d.apply(&info("b", 2), |_| true);
        d.apply(&info("c", 3), |_| true);
        assert_eq!(d.len(), 2, "at most max_devices");
        let items = (0..10)
            .map(|i| CatalogItem {
                device_id: format!("ch{i}"),
                ..Default::default()
            })
            .collect();
        d.apply(
            &EndpointEvent::Catalog {
                device_id: "a".into(),
                sn: 7,
                sum_num: 10,
                items,
            },
            |_| true,
        );
        let e = d.get("a").unwrap();
        assert_eq!(
            e.catalog.as_ref().unwrap().1.len(),
            3,
            "at most max_channels"
        );
        assert_eq!(e.info.as_ref().unwrap().1.manufacturer, "ACME");
        assert!(d.channel("a", "ch2").is_some());
        assert!(d.channel("a", "ch5").is_none());
        d.apply(
            &EndpointEvent::Registrar(RegEvent::Unregistered {
                device_id: "a".into(),
                reason: UnregisterReason::Expired,
            }),
            |_| true,
        );
        assert!(d.get("a").is_none());
    }

    #[test]
    fn waiters_wake_on_answers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let d = std::sync::Arc::new(Directory::new(10, 10));
        let d2 = d.clone();
        let d3 = d.clone();
        let got = rt.block_on(async move {
            let t = tokio::spawn(async move {
                d2.wait_for("a", std::time::Duration::from_secs(5), |e| {
                    e.info
                        .as_ref()
                        .filter(|(sn, _)| *sn == 9)
                        .map(|(sn, _)| *sn)
                })
                .await
            });
            tokio::task::yield_now().await;
            d3.apply(&info("a", 8), |_| true);
            d3.apply(&info("a", 9), |_| true);
            t.await.unwrap()
        });
        assert_eq!(got, Some(9));
        let none = rt.block_on(d.wait_for("b", std::time::Duration::from_millis(50), |e| {
            e.info.clone()
        }));
        assert!(none.is_none());
    }
}
