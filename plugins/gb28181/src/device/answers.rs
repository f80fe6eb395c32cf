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
            Ok(Manscdp::DeviceControl { ptz, key_frame, .. }) => {
                if let Some(p) = ptz {
                    (self.on_event)(DeviceEvent::Ptz {
                        command: p.to_hex(),
                    });
                }
                if key_frame {
                    (self.on_event)(DeviceEvent::KeyFrameRequested);
                }
                return;
            }
            _ => return,
        };
        let _ = self.send(&self.new_message(&body));
    }
}
