//! Subscription bodies (GB/T 28181-2016 §9.5, §9.11, Annex A): what a platform subscribes to
//! (Catalog changes, Alarm, MobilePosition) and what devices notify. Parsing is tolerant of
//! missing fields (devices leave many out); strings are kept as sent (bounded by the XML
//! parser) and numbers are `None` when absent or malformed.

use super::manscdp::{CatalogItem, Element, Root, head, push_catalog_item, push_el};
use std::fmt::Write;

/// `<Notify><CmdType>Alarm</CmdType>`: an alarm from a device or one of its channels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alarm {
    pub sn: u32,
    /// The alarming device or channel.
    pub device_id: String,
    /// 1 first-level (highest) .. 4 fourth-level.
    pub priority: Option<u32>,
    /// 1 telephone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other.
    pub method: Option<u32>,
    /// `yyyy-MM-ddTHH:mm:ss` as the device wrote it.
    pub time: String,
    pub description: String,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    /// `<Info><AlarmType>` (2016), e.g. 2 = motion detection for video alarms.
    pub alarm_type: Option<u32>,
}

impl Alarm {
    pub(crate) fn from_element(sn: u32, device_id: String, e: &Element) -> Alarm {
        Alarm {
            sn,
            device_id,
            priority: e.number("AlarmPriority"),
            method: e.number("AlarmMethod"),
            time: e.string("AlarmTime"),
            description: e.string("AlarmDescription"),
            longitude: e.number("Longitude"),
            latitude: e.number("Latitude"),
            alarm_type: e
                .child("Info")
                .and_then(|i| i.number("AlarmType"))
                .or_else(|| e.number("AlarmType")),
        }
    }
}

/// `<Notify><CmdType>MobilePosition</CmdType>`: where a mobile device is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MobilePosition {
    pub sn: u32,
    pub device_id: String,
    pub time: String,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    /// km/h.
    pub speed: Option<f64>,
    /// Degrees from north, clockwise.
    pub direction: Option<f64>,
    /// Metres.
    pub altitude: Option<f64>,
}

impl MobilePosition {
    pub(crate) fn from_element(sn: u32, device_id: String, e: &Element) -> MobilePosition {
        MobilePosition {
            sn,
            device_id,
            time: e.string("Time"),
            longitude: e.number("Longitude"),
            latitude: e.number("Latitude"),
            speed: e.number("Speed"),
            direction: e.number("Direction"),
            altitude: e.number("Altitude"),
        }
    }
}

fn push_num<T: std::fmt::Display>(s: &mut String, name: &str, v: Option<T>) {
    if let Some(v) = v {
        push_el(s, name, &v.to_string());
    }
}

/// SUBSCRIBE body for MobilePosition: a report every `interval_s` seconds.
pub fn build_mobile_position_query(sn: u32, device_id: &str, interval_s: u32) -> String {
    let mut s = head(Root::Query, "MobilePosition", sn, device_id);
    push_el(&mut s, "Interval", &interval_s.to_string());
    s.push_str("</Query>\r\n");
    s
}

/// SUBSCRIBE body for alarms: every priority (1..4) and method (0 = all), any time.
pub fn build_alarm_query(sn: u32, device_id: &str) -> String {
    let mut s = head(Root::Query, "Alarm", sn, device_id);
    push_el(&mut s, "StartAlarmPriority", "1");
    push_el(&mut s, "EndAlarmPriority", "4");
    push_el(&mut s, "AlarmMethod", "0");
    s.push_str("</Query>\r\n");
    s
}

/// Device side: a Catalog NOTIFY carrying changed `items` (each with its `event`).
pub fn build_catalog_notify(sn: u32, device_id: &str, items: &[CatalogItem]) -> String {
    let mut s = head(Root::Notify, "Catalog", sn, device_id);
    push_el(&mut s, "SumNum", &items.len().to_string());
    let _ = write!(s, "<DeviceList Num=\"{}\">\r\n", items.len());
    for i in items {
        push_catalog_item(&mut s, i);
    }
    s.push_str("</DeviceList>\r\n</Notify>\r\n");
    s
}

/// Device side: an alarm notification.
pub fn build_alarm_notify(a: &Alarm) -> String {
    let mut s = head(Root::Notify, "Alarm", a.sn, &a.device_id);
    push_num(&mut s, "AlarmPriority", a.priority);
    push_num(&mut s, "AlarmMethod", a.method);
    push_el(&mut s, "AlarmTime", &a.time);
    push_el(&mut s, "AlarmDescription", &a.description);
    push_num(&mut s, "Longitude", a.longitude);
    push_num(&mut s, "Latitude", a.latitude);
    if let Some(t) = a.alarm_type {
        s.push_str("<Info>\r\n");
        push_el(&mut s, "AlarmType", &t.to_string());
        s.push_str("</Info>\r\n");
    }
    s.push_str("</Notify>\r\n");
    s
}

/// Platform side: the answer to an alarm (§9.4: `<Response>... <Result>OK</Result>`).
pub fn build_alarm_response(sn: u32, device_id: &str) -> String {
    let mut s = head(Root::Response, "Alarm", sn, device_id);
    push_el(&mut s, "Result", "OK");
    s.push_str("</Response>\r\n");
    s
}

/// Device side: a position report.
pub fn build_mobile_position_notify(p: &MobilePosition) -> String {
    let mut s = head(Root::Notify, "MobilePosition", p.sn, &p.device_id);
    push_el(&mut s, "Time", &p.time);
    push_num(&mut s, "Longitude", p.longitude);
    push_num(&mut s, "Latitude", p.latitude);
    push_num(&mut s, "Speed", p.speed);
    push_num(&mut s, "Direction", p.direction);
    push_num(&mut s, "Altitude", p.altitude);
    s.push_str("</Notify>\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manscdp::{Charset, Manscdp, encode_body};

    fn parse(xml: &str) -> Manscdp {
        Manscdp::parse(&encode_body(xml, Charset::Gb2312)).unwrap()
    }

    #[test]
    fn alarm_round_trip_and_a_field_device() {
        let a = Alarm {
            sn: 7,
            device_id: "34020000001340000001".into(),
            priority: Some(1),
            method: Some(5),
            time: "2026-11-27T10:00:00".into(),
            description: "移动侦测 <motion>".into(),
            longitude: Some(116.3),
            latitude: Some(39.9),
            alarm_type: Some(2),
        };
        assert_eq!(parse(&build_alarm_notify(&a)), Manscdp::Alarm(a));
        // As a Hikvision camera sends it (no Info, no position).
        let hik = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>12</SN>\r\n<DeviceID>34020000001340000001</DeviceID>\r\n<AlarmPriority>4</AlarmPriority>\r\n<AlarmTime>2026-11-27T10:00:01</AlarmTime>\r\n<AlarmMethod>5</AlarmMethod>\r\n</Notify>\r\n";
        let Manscdp::Alarm(a) = parse(hik) else {
            panic!("an alarm")
        };
        assert_eq!(
            (a.sn, a.priority, a.method, a.alarm_type),
            (12, Some(4), Some(5), None)
        );
        assert_eq!(a.longitude, None);
        // Garbage numbers are None, not errors.
        let bad = hik.replace("<AlarmPriority>4", "<AlarmPriority>high");
        let Manscdp::Alarm(a) = parse(&bad) else {
            panic!("an alarm")
        };
        assert_eq!(a.priority, None);
    }

    #[test]
    fn mobile_position_and_queries() {
        let p = MobilePosition {
            sn: 3,
            device_id: "34020000001320000001".into(),
            time: "2026-11-27T10:00:00".into(),
            longitude: Some(121.47),
            latitude: Some(31.23),
            speed: Some(36.5),
            direction: Some(90.0),
            altitude: Some(4.0),
        };
        assert_eq!(
            parse(&build_mobile_position_notify(&p)),
            Manscdp::MobilePosition(p)
        );
        assert_eq!(
            parse(&build_mobile_position_query(9, "34020000001320000001", 5)),
            Manscdp::MobilePositionQuery {
                sn: 9,
                device_id: "34020000001320000001".into(),
                interval_s: 5
            }
        );
        assert_eq!(
            parse(&build_alarm_query(10, "34020000001320000001")),
            Manscdp::AlarmQuery {
                sn: 10,
                device_id: "34020000001320000001".into()
            }
        );
        assert!(build_alarm_response(4, "x").contains("<Result>OK</Result>"));
    }

    #[test]
    fn catalog_notify_items_carry_their_event() {
        let items = vec![
            CatalogItem {
                device_id: "34020000001320000002".into(),
                name: "gate".into(),
                status: "ON".into(),
                event: "ADD".into(),
                ..Default::default()
            },
            CatalogItem {
                device_id: "34020000001320000003".into(),
                event: "DEL".into(),
                ..Default::default()
            },
        ];
        let Manscdp::CatalogNotify(l) =
            parse(&build_catalog_notify(5, "34020000001320000001", &items))
        else {
            panic!("a catalog notify")
        };
        assert_eq!(l.sum_num, 2);
        assert_eq!(l.items, items);
    }
}
