//! MANSCDP the platform sends us (queries, controls) and our answers.

use super::*;

impl DeviceAgent {
    pub(super) fn new_message(&self, body: &str) -> Message {
        let c = &self.config;
        let local = self.local_addr();
        let mut m = Message::request("MESSAGE", &format!("sip:{}@{}", c.server_id, c.domain));
        m.add_header("Via", self.via())
            .add_header(
                "From",
                format!("<sip:{}@{}>;tag={}", c.device_id, c.domain, random::tag()),
            )
            .add_header("To", format!("<sip:{}@{}>", c.server_id, c.domain))
            .add_header("Call-ID", format!("{}@{}", random::call_id(), local.ip()))
            .add_header("CSeq", "1 MESSAGE")
            .add_header("Max-Forwards", "70");
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(body, manscdp::Charset::Gb2312),
        );
        m
    }

    /// Our one channel as a Catalog item.
    pub(super) fn catalog_item(&self) -> CatalogItem {
        let c = &self.config;
        CatalogItem {
            device_id: c.channel_id.clone(),
            name: c.device_name.clone(),
            manufacturer: "gst-ipcam".into(),
            model: "gb28181sink".into(),
            owner: "gst-ipcam".into(),
            civil_code: c.domain.chars().take(6).collect(),
            address: "gst-ipcam".into(),
            parental: Some(0),
            parent_id: c.device_id.clone(),
            register_way: Some(1),
            secrecy: Some(0),
            status: "ON".into(),
            // A fixed camera.
            ptz_type: Some(3),
            ..Default::default()
        }
    }

    /// Answers a [`DeviceEvent::RecordInfoQuery`]: at most [`MAX_RECORDS`] items of
    /// `channel`, in MESSAGEs of 20 items (`SumNum` the total, as the standard pages them).
    pub fn answer_record_info(&self, sn: u32, channel: &str, items: &[manscdp::RecordItem]) {
        let items = &items[..items.len().min(MAX_RECORDS)];
        let pages: Vec<&[manscdp::RecordItem]> = if items.is_empty() {
            vec![&[]]
        } else {
            items.chunks(records::MAX_RECORDS_PER_ANSWER).collect()
        };
        for page in pages {
            let body = manscdp::build_record_info_response(sn, items.len() as u32, channel, page);
            let _ = self.send(&self.new_message(&body));
        }
    }

    pub(super) fn handle_manscdp(&self, m: &Message) {
        let c = &self.config;
        let body = match Manscdp::parse(&m.body) {
            Ok(Manscdp::CatalogQuery { sn, .. }) if let Some(ch) = &self.channels => {
                self.send_catalog(ch, sn);
                return;
            }
            Ok(Manscdp::CatalogQuery { sn, .. }) => {
                let item = self.catalog_item();
                manscdp::build_catalog_response(sn, &c.device_id, 1, &[item])
            }
            Ok(Manscdp::DeviceInfoQuery { sn, .. }) => manscdp::build_device_info_response(
                sn,
                &manscdp::DeviceInfo {
                    device_id: c.device_id.clone(),
                    result: "OK".into(),
                    device_name: c.device_name.clone(),
                    manufacturer: "gst-ipcam".into(),
                    model: if self.channels.is_some() {
                        "gst-ipcam platform"
                    } else {
                        "gb28181sink"
                    }
                    .into(),
                    firmware: env!("CARGO_PKG_VERSION").into(),
                    channel: Some(match &self.channels {
                        Some(ch) => self.shared_catalog(ch).len() as u32,
                        None => 1,
                    }),
                },
            ),
            Ok(Manscdp::DeviceStatusQuery { sn, .. }) => {
                let online = if self.is_registered() {
                    "ONLINE"
                } else {
                    "OFFLINE"
                };
                format!(
                    "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Result>OK</Result>\r\n<Online>{online}</Online>\r\n<Status>OK</Status>\r\n<Encode>ON</Encode>\r\n<Record>OFF</Record>\r\n<DeviceTime>{}</DeviceTime>\r\n</Response>\r\n",
                    c.device_id,
                    crate::core::registrar::format_gb_date(crate::endpoint::wall_ms(), 480)
                        .chars()
                        .take(19)
                        .collect::<String>()
                )
            }
            Ok(Manscdp::RecordInfoQuery(q)) if let Some(ch) = &self.channels => {
                // A gateway's channels: their cameras hold the recordings (asked by the
                // owner of the agent); a channel not shared has none.
                if ch.directory.admit(&q.device_id).is_ok() {
                    (self.on_event)(DeviceEvent::RecordInfoQuery {
                        sn: q.sn,
                        channel: q.device_id,
                        start: q.start_time,
                        end: q.end_time,
                    });
                    return;
                }
                manscdp::build_record_info_response(q.sn, 0, &q.device_id, &[])
            }
            Ok(Manscdp::RecordInfoQuery(q)) => {
                let items = records_in(&c.records, &q.device_id, &q.start_time, &q.end_time);
                manscdp::build_record_info_response(q.sn, items.len() as u32, &q.device_id, &items)
            }
            Ok(Manscdp::Broadcast {
                sn,
                source_id,
                target_id,
            }) => {
                self.handle_broadcast(sn, &source_id, &target_id);
                return;
            }
            Ok(Manscdp::DeviceControl {
                device_id,
                ptz,
                key_frame,
                ..
            }) => {
                // Many-channel mode: only for a shared channel.
                if let Some(ch) = &self.channels
                    && ch.directory.admit(&device_id).is_err()
                {
                    return;
                }
                if let Some(p) = ptz {
                    (self.on_event)(DeviceEvent::Ptz {
                        channel: device_id.clone(),
                        command: p.to_hex(),
                    });
                }
                if key_frame {
                    (self.on_event)(DeviceEvent::KeyFrameRequested { channel: device_id });
                }
                return;
            }
            _ => return,
        };
        let _ = self.send(&self.new_message(&body));
    }
}
