//! What an upper platform is shared: every mounted channel (`channels = ["all"]`) or the
//! listed ones, described as the camera's own Catalog described them (name, model, PTZ
//! type...), `Status` ON only while the camera is registered and mounted (a listed channel
//! that is not mounted is listed OFF, as wvp-GB28181-pro lists offline channels).

use crate::cascade::CascadeConfig;
use crate::gateway::{Control, Gone};
use gstgb28181::core::manscdp::CatalogItem;
use gstgb28181::device::ChannelDirectory;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub(super) struct Shared {
    all: bool,
    /// The listed channels, in the file's order, without repeats.
    list: Vec<String>,
    listed: HashSet<String>,
    control: Arc<Control>,
}

impl Shared {
    pub(super) fn new(cfg: &CascadeConfig, control: Arc<Control>) -> Shared {
        let mut listed = HashSet::new();
        let list = cfg
            .channels
            .iter()
            .filter(|c| *c != "all")
            .filter(|c| match control.check_id(c) {
                Ok(()) => true,
                Err(e) => {
                    crate::gateway::warn(&format!("cascade {}: not shared: {e}", cfg.server_id));
                    false
                }
            })
            .filter(|c| listed.insert(c.to_string()))
            .cloned()
            .collect();
        Shared {
            all: cfg.shares_all(),
            list,
            listed,
            control,
        }
    }

    fn is_shared(&self, channel: &str) -> bool {
        self.all || self.listed.contains(channel)
    }

    /// `channel` (of `device` when mounted) as a Catalog item.
    fn item(&self, channel: &str, device: Option<&str>) -> CatalogItem {
        let known = device.and_then(|d| self.control.directory().channel(d, channel));
        let online = device.is_some_and(|d| self.control.device(d).is_some());
        let mut i = known.unwrap_or_else(|| CatalogItem {
            name: channel.to_string(),
            manufacturer: "gst-ipcam".into(),
            model: "channel".into(),
            owner: "gst-ipcam".into(),
            address: "gst-ipcam".into(),
            ..Default::default()
        });
        i.device_id = channel.to_string();
        if i.civil_code.is_empty() {
            i.civil_code = channel.chars().take(6).collect();
        }
        i.parental = Some(0);
        i.register_way.get_or_insert(1);
        i.secrecy.get_or_insert(0);
        i.status = if online && !i.status.eq_ignore_ascii_case("OFF") {
            "ON".into()
        } else {
            "OFF".into()
        };
        i.event.clear();
        i
    }
}

impl ChannelDirectory for Shared {
    fn catalog(&self) -> Vec<CatalogItem> {
        let mounted: HashMap<String, String> = self
            .control
            .channels()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let ids: Vec<&String> = if self.all {
            let mut ids: Vec<&String> = mounted.keys().collect();
            ids.sort();
            ids
        } else {
            self.list.iter().collect()
        };
        ids.into_iter()
            .map(|c| self.item(c, mounted.get(c).map(String::as_str)))
            .collect()
    }

    fn admit(&self, channel: &str) -> Result<(), (u16, &'static str)> {
        if self.control.check_id(channel).is_err() || !self.is_shared(channel) {
            return Err((404, "Not Found"));
        }
        match self.control.channel_device(channel) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err((404, "Not Found")),
            Err(Gone) => Err((503, "Service Unavailable")),
        }
    }
}
