//! MANSCDP (`Application/MANSCDP+xml`) bodies: decoding (GB2312/GBK/UTF-8, declared and
//! actual encodings may disagree), a small bounded element tree over quick-xml, typed views
//! of the messages a platform handles, multi-message list merging by SN, PTZ commands and
//! builders for the platform's queries (and the device's answers).
//!
//! Limits: [`MAX_BODY`] bytes, [`MAX_DEPTH`] nesting, [`MAX_ELEMENTS`] elements per body,
//! [`MAX_LIST_ITEMS`] merged items per list, [`MAX_PENDING_LISTS`] lists merged at once.

use encoding_rs::{Encoding, GB18030, GBK, UTF_8};
use quick_xml::escape::escape;
use quick_xml::events::Event;
use std::collections::HashMap;
use std::fmt::Write;

pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_DEPTH: usize = 16;
pub const MAX_ELEMENTS: usize = 8192;
pub const MAX_LIST_ITEMS: usize = 20_000;
pub const MAX_PENDING_LISTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    TooLarge,
    Xml(String),
    TooDeep,
    TooManyElements,
    NoRoot,
    UnknownRoot(String),
    Missing(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TooLarge => f.write_str("body too large"),
            Error::Xml(e) => write!(f, "bad XML: {e}"),
            Error::TooDeep => f.write_str("XML nested too deep"),
            Error::TooManyElements => f.write_str("too many XML elements"),
            Error::NoRoot => f.write_str("no root element"),
            Error::UnknownRoot(r) => write!(f, "unknown root element {r}"),
            Error::Missing(w) => write!(f, "missing <{w}>"),
        }
    }
}

impl std::error::Error for Error {}

/// The `encoding` of the `<?xml ...?>` declaration, if any.
fn declared_encoding(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(256)];
    let start = head.windows(5).position(|w| w == b"<?xml")?;
    let end = start + head[start..].windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[start..end]).ok()?;
    let pos = decl.find("encoding")?;
    let rest = decl[pos + 8..].trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let label = rest[1..].split(quote).next()?;
    Encoding::for_label(label.trim().as_bytes())
}

/// Decodes a body: by its declaration, except that valid multi-byte UTF-8 wins over a
/// declared GB2312/GBK (devices lie), and undecodable "UTF-8" is retried as GB18030.
/// Returns the text and the encoding actually used.
pub fn decode_body(body: &[u8]) -> (String, &'static Encoding) {
    let declared = declared_encoding(body).unwrap_or(UTF_8);
    let utf8 = std::str::from_utf8(body).ok();
    if let Some(s) = utf8
        && (declared == UTF_8 || !s.is_ascii())
    {
        return (s.to_string(), UTF_8);
    }
    if declared != UTF_8
        && let Some(s) = declared.decode_without_bom_handling_and_without_replacement(body)
    {
        return (s.into_owned(), declared);
    }
    // GB2312 is a subset of GBK which is a subset of GB18030.
    if let Some(s) = GB18030.decode_without_bom_handling_and_without_replacement(body) {
        return (s.into_owned(), GB18030);
    }
    (String::from_utf8_lossy(body).into_owned(), UTF_8)
}

/// A parsed XML element (names without namespace prefix, text trimmed and concatenated).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// Trimmed text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    pub(crate) fn string(&self, name: &str) -> String {
        self.child_text(name).unwrap_or_default().to_string()
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.child_text(name)?.parse().ok()
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn resolve_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses XML text into its root element.
pub fn parse_xml(text: &str) -> Result<Element, Error> {
    if text.len() > MAX_BODY * 4 {
        return Err(Error::TooLarge);
    }
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let xml_err = |e: &dyn std::fmt::Display| Error::Xml(e.to_string());
    let new_element = |e: &quick_xml::events::BytesStart| Element {
        name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
        attrs: e
            .attributes()
            .flatten()
            .map(|a| {
                (
                    String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                    String::from_utf8_lossy(&a.value).into_owned(),
                )
            })
            .collect(),
        ..Default::default()
    };
    loop {
        let ev = reader.read_event().map_err(|e| xml_err(&e))?;
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(Error::Xml("content after the root element".into()));
            }
            Event::Start(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(Error::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::TooDeep);
                }
                stack.push(new_element(&e));
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(Error::TooManyElements);
                }
                let el = new_element(&e);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let mut el = stack.pop().ok_or(Error::Xml("unbalanced end tag".into()))?;
                let trimmed = el.text.trim();
                if trimmed.len() != el.text.len() {
                    el.text = trimmed.to_string();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&t.decode().map_err(|e| xml_err(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&t.decode().map_err(|e| xml_err(&e))?);
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(|e| xml_err(&e))? {
                    Some(c) => c,
                    None => {
                        let name = r.decode().map_err(|e| xml_err(&e))?;
                        resolve_entity(&name)
                            .ok_or_else(|| Error::Xml(format!("unknown entity &{name};")))?
                    }
                };
                if let Some(cur) = stack.last_mut() {
                    cur.text.push(ch);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(Error::Xml("unclosed element".into()));
    }
    root.ok_or(Error::NoRoot)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Query,
    Notify,
    Response,
    Control,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Query => "Query",
            Root::Notify => "Notify",
            Root::Response => "Response",
            Root::Control => "Control",
        }
    }
}

/// Any MANSCDP message: root kind, CmdType, SN, DeviceID, and the element tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub root: Root,
    pub cmd_type: String,
    pub sn: u32,
    pub device_id: String,
    pub element: Element,
}

impl Document {
    pub fn parse(body: &[u8]) -> Result<Document, Error> {
        if body.len() > MAX_BODY {
            return Err(Error::TooLarge);
        }
        let (text, _) = decode_body(body);
        let element = parse_xml(&text)?;
        let root = match element.name.to_ascii_lowercase().as_str() {
            "query" => Root::Query,
            "notify" => Root::Notify,
            "response" => Root::Response,
            "control" => Root::Control,
            _ => return Err(Error::UnknownRoot(element.name.clone())),
        };
        let cmd_type = element
            .child_text("CmdType")
            .ok_or(Error::Missing("CmdType"))?
            .to_string();
        let sn = element.number("SN").ok_or(Error::Missing("SN"))?;
        // A Broadcast notification names SourceID and TargetID instead (§9.12).
        let device_id = element
            .child_text("DeviceID")
            .or_else(|| {
                cmd_type
                    .eq_ignore_ascii_case("Broadcast")
                    .then(|| element.child_text("TargetID"))
                    .flatten()
            })
            .ok_or(Error::Missing("DeviceID"))?
            .to_string();
        Ok(Document {
            root,
            cmd_type,
            sn,
            device_id,
            element,
        })
    }

    pub fn is(&self, root: Root, cmd_type: &str) -> bool {
        self.root == root && self.cmd_type.eq_ignore_ascii_case(cmd_type)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    pub sn: u32,
    pub device_id: String,
    pub status_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CatalogItem {
    pub device_id: String,
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    pub owner: String,
    pub civil_code: String,
    pub address: String,
    pub parental: Option<u32>,
    pub parent_id: String,
    pub register_way: Option<u32>,
    pub secrecy: Option<u32>,
    pub status: String,
    pub ip_address: String,
    pub port: Option<u16>,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    /// `<Info><PTZType>` (2016: 1 dome, 2 hemisphere, 3 fixed, 4 remote-controlled fixed).
    pub ptz_type: Option<u32>,
    /// In a Catalog NOTIFY (subscription): ADD, DEL, UPDATE, ON, OFF, VLOST, DEFECT.
    pub event: String,
}

impl CatalogItem {
    fn from_element(e: &Element) -> CatalogItem {
        CatalogItem {
            device_id: e.string("DeviceID"),
            name: e.string("Name"),
            manufacturer: e.string("Manufacturer"),
            model: e.string("Model"),
            owner: e.string("Owner"),
            civil_code: e.string("CivilCode"),
            address: e.string("Address"),
            parental: e.number("Parental"),
            parent_id: e.string("ParentID"),
            register_way: e.number("RegisterWay"),
            secrecy: e.number("Secrecy"),
            status: e.string("Status"),
            ip_address: e.string("IPAddress"),
            port: e.number("Port"),
            longitude: e.number("Longitude"),
            latitude: e.number("Latitude"),
            ptz_type: e
                .child("Info")
                .and_then(|i| i.number("PTZType"))
                .or_else(|| e.number("PTZType")),
            event: e.string("Event"),
        }
    }
}

/// One (part of a) list response: Catalog or RecordInfo.
#[derive(Debug, Clone, PartialEq)]
pub struct ListResponse<T> {
    pub sn: u32,
    pub device_id: String,
    pub sum_num: u32,
    pub items: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordItem {
    pub device_id: String,
    pub name: String,
    pub file_path: String,
    pub address: String,
    pub start_time: String,
    pub end_time: String,
    pub secrecy: Option<u32>,
    pub record_type: String,
    pub file_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    pub device_id: String,
    pub result: String,
    pub device_name: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub channel: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    pub device_id: String,
    pub result: String,
    pub online: String,
    pub status: String,
    pub encode: String,
    pub record: String,
    pub device_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfoQuery {
    pub sn: u32,
    pub device_id: String,
    pub start_time: String,
    pub end_time: String,
    pub record_type: String,
}

/// The messages a platform (or device) acts on; anything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
pub enum Manscdp {
    Keepalive(Keepalive),
    CatalogQuery {
        sn: u32,
        device_id: String,
    },
    Catalog(ListResponse<CatalogItem>),
    DeviceInfoQuery {
        sn: u32,
        device_id: String,
    },
    DeviceInfo {
        sn: u32,
        info: DeviceInfo,
    },
    DeviceStatusQuery {
        sn: u32,
        device_id: String,
    },
    DeviceStatus {
        sn: u32,
        status: DeviceStatus,
    },
    RecordInfoQuery(RecordInfoQuery),
    RecordInfo(ListResponse<RecordItem>),
    DeviceControl {
        sn: u32,
        device_id: String,
        ptz: Option<PtzCmd>,
        /// `<IFameCmd>Send</IFameCmd>` (the standard's spelling; `IFrameCmd` also read):
        /// the platform asks for a key frame now.
        key_frame: bool,
    },
    /// Catalog changes a subscribed device reports (`<Notify>`; each item has its `event`).
    CatalogNotify(ListResponse<CatalogItem>),
    Alarm(super::notify::Alarm),
    MobilePosition(super::notify::MobilePosition),
    /// Subscription bodies the device side reads: MobilePosition (with its interval) and
    /// Alarm queries.
    MobilePositionQuery {
        sn: u32,
        device_id: String,
        interval_s: u32,
    },
    AlarmQuery {
        sn: u32,
        device_id: String,
    },
    /// Voice broadcast (§9.12): the platform's `source_id` wants to talk to `target_id`.
    Broadcast {
        sn: u32,
        source_id: String,
        target_id: String,
    },
    BroadcastResponse {
        sn: u32,
        device_id: String,
        ok: bool,
    },
    /// Device notification during playback/download; `notify_type` 121 = end of file.
    MediaStatus {
        sn: u32,
        device_id: String,
        notify_type: u32,
    },
    Other(Document),
}

fn list_items<T>(doc: &Document, list: &str, f: fn(&Element) -> T) -> ListResponse<T> {
    let items = doc
        .element
        .child(list)
        .map(|l| {
            l.children_named("Item")
                .take(MAX_LIST_ITEMS)
                .map(f)
                .collect()
        })
        .unwrap_or_default();
    ListResponse {
        sn: doc.sn,
        device_id: doc.device_id.clone(),
        sum_num: doc.element.number("SumNum").unwrap_or(0),
        items,
    }
}

impl Manscdp {
    /// The document's `<DeviceID>` (whom it is about).
    pub fn device_id(&self) -> &str {
        match self {
            Manscdp::Keepalive(k) => &k.device_id,
            Manscdp::CatalogQuery { device_id, .. }
            | Manscdp::DeviceInfoQuery { device_id, .. }
            | Manscdp::DeviceStatusQuery { device_id, .. }
            | Manscdp::DeviceControl { device_id, .. }
            | Manscdp::MediaStatus { device_id, .. } => device_id,
            Manscdp::Catalog(l) | Manscdp::CatalogNotify(l) => &l.device_id,
            Manscdp::Alarm(a) => &a.device_id,
            Manscdp::MobilePosition(m) => &m.device_id,
            Manscdp::MobilePositionQuery { device_id, .. }
            | Manscdp::AlarmQuery { device_id, .. }
            | Manscdp::BroadcastResponse { device_id, .. } => device_id,
            Manscdp::Broadcast { target_id, .. } => target_id,
            Manscdp::RecordInfo(l) => &l.device_id,
            Manscdp::DeviceInfo { info, .. } => &info.device_id,
            Manscdp::DeviceStatus { status, .. } => &status.device_id,
            Manscdp::RecordInfoQuery(q) => &q.device_id,
            Manscdp::Other(doc) => &doc.device_id,
        }
    }

    pub fn parse(body: &[u8]) -> Result<Manscdp, Error> {
        let doc = Document::parse(body)?;
        let e = &doc.element;
        let sn = doc.sn;
        let device_id = doc.device_id.clone();
        Ok(if doc.is(Root::Notify, "Keepalive") {
            Manscdp::Keepalive(Keepalive {
                sn,
                device_id,
                status_ok: e
                    .child_text("Status")
                    .is_none_or(|s| s.eq_ignore_ascii_case("OK")),
            })
        } else if doc.is(Root::Query, "Catalog") {
            Manscdp::CatalogQuery { sn, device_id }
        } else if doc.is(Root::Response, "Catalog") {
            Manscdp::Catalog(list_items(&doc, "DeviceList", CatalogItem::from_element))
        } else if doc.is(Root::Query, "DeviceInfo") {
            Manscdp::DeviceInfoQuery { sn, device_id }
        } else if doc.is(Root::Response, "DeviceInfo") {
            Manscdp::DeviceInfo {
                sn,
                info: DeviceInfo {
                    device_id,
                    result: e.string("Result"),
                    device_name: e.string("DeviceName"),
                    manufacturer: e.string("Manufacturer"),
                    model: e.string("Model"),
                    firmware: e.string("Firmware"),
                    channel: e.number("Channel"),
                },
            }
        } else if doc.is(Root::Query, "DeviceStatus") {
            Manscdp::DeviceStatusQuery { sn, device_id }
        } else if doc.is(Root::Response, "DeviceStatus") {
            Manscdp::DeviceStatus {
                sn,
                status: DeviceStatus {
                    device_id,
                    result: e.string("Result"),
                    online: e.string("Online"),
                    status: e.string("Status"),
                    encode: e.string("Encode"),
                    record: e.string("Record"),
                    device_time: e.string("DeviceTime"),
                },
            }
        } else if doc.is(Root::Query, "RecordInfo") {
            Manscdp::RecordInfoQuery(RecordInfoQuery {
                sn,
                device_id,
                start_time: e.string("StartTime"),
                end_time: e.string("EndTime"),
                record_type: e.string("Type"),
            })
        } else if doc.is(Root::Response, "RecordInfo") {
            Manscdp::RecordInfo(list_items(&doc, "RecordList", |i| RecordItem {
                device_id: i.string("DeviceID"),
                name: i.string("Name"),
                file_path: i.string("FilePath"),
                address: i.string("Address"),
                start_time: i.string("StartTime"),
                end_time: i.string("EndTime"),
                secrecy: i.number("Secrecy"),
                record_type: i.string("Type"),
                file_size: i.number("FileSize"),
            }))
        } else if doc.is(Root::Notify, "Catalog") {
            Manscdp::CatalogNotify(list_items(&doc, "DeviceList", CatalogItem::from_element))
        } else if doc.is(Root::Notify, "Alarm") {
            Manscdp::Alarm(super::notify::Alarm::from_element(sn, device_id, e))
        } else if doc.is(Root::Notify, "MobilePosition") {
            Manscdp::MobilePosition(super::notify::MobilePosition::from_element(
                sn, device_id, e,
            ))
        } else if doc.is(Root::Query, "MobilePosition") {
            Manscdp::MobilePositionQuery {
                sn,
                device_id,
                interval_s: e.number("Interval").unwrap_or(5),
            }
        } else if doc.is(Root::Query, "Alarm") {
            Manscdp::AlarmQuery { sn, device_id }
        } else if doc.is(Root::Notify, "Broadcast") {
            Manscdp::Broadcast {
                sn,
                source_id: e.string("SourceID"),
                target_id: device_id,
            }
        } else if doc.is(Root::Response, "Broadcast") {
            Manscdp::BroadcastResponse {
                sn,
                device_id,
                ok: e
                    .child_text("Result")
                    .is_some_and(|r| r.trim().eq_ignore_ascii_case("OK")),
            }
        } else if doc.is(Root::Notify, "MediaStatus") {
            Manscdp::MediaStatus {
                sn,
                device_id,
                notify_type: e.number("NotifyType").unwrap_or(0),
            }
        } else if doc.is(Root::Control, "DeviceControl") {
            Manscdp::DeviceControl {
                sn,
                device_id,
                ptz: e.child_text("PTZCmd").and_then(PtzCmd::parse_hex),
                key_frame: ["IFameCmd", "IFrameCmd"]
                    .iter()
                    .any(|t| e.child_text(t).is_some_and(|v| v.trim() == "Send")),
            }
        } else {
            Manscdp::Other(doc)
        })
    }
}

/// Merges list responses split over several MESSAGEs (same DeviceID and SN) until SumNum
/// items arrived. Bounded: at most [`MAX_PENDING_LISTS`] lists and `max_items` kept items each
/// (at most [`MAX_LIST_ITEMS`]; further items are counted in [`ListMerger::dropped`] and the
/// list still completes when SumNum items arrived); lists idle for longer than `timeout_ms`
/// are dropped (returned incomplete by [`ListMerger::expire`]).
#[derive(Debug)]
pub struct ListMerger<T> {
    /// (last part's time, items arrived (kept, dropped or skipped by the caller), the list).
    pending: HashMap<(String, u32), (u64, usize, ListResponse<T>)>,
    pub timeout_ms: u64,
    max_items: usize,
    /// Items dropped because a list had `max_items` already.
    pub dropped: u64,
}

impl<T> ListMerger<T> {
    pub fn new(timeout_ms: u64) -> Self {
        Self::with_max_items(timeout_ms, MAX_LIST_ITEMS)
    }

    /// A merger keeping at most `max_items` items per list (capped at [`MAX_LIST_ITEMS`]).
    pub fn with_max_items(timeout_ms: u64, max_items: usize) -> Self {
        ListMerger {
            pending: HashMap::new(),
            timeout_ms,
            max_items: max_items.min(MAX_LIST_ITEMS),
            dropped: 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds a part; returns the whole list when complete.
    pub fn add(&mut self, part: ListResponse<T>, now_ms: u64) -> Option<ListResponse<T>> {
        self.add_part(part, 0, now_ms)
    }

    /// Adds a part of which the caller already dropped `skipped` items (they still count
    /// towards SumNum); returns the whole list when complete.
    pub fn add_part(
        &mut self,
        part: ListResponse<T>,
        skipped: usize,
        now_ms: u64,
    ) -> Option<ListResponse<T>> {
        let key = (part.device_id.clone(), part.sn);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING_LISTS {
            // Drop the oldest to stay bounded.
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, (t, _, _))| *t)
                .map(|(k, _)| k.clone())
            {
                self.pending.remove(&oldest);
            }
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| {
            (
                now_ms,
                0,
                ListResponse {
                    sn: part.sn,
                    device_id: part.device_id.clone(),
                    sum_num: part.sum_num,
                    items: Vec::new(),
                },
            )
        });
        entry.0 = now_ms;
        entry.1 = entry
            .1
            .saturating_add(part.items.len())
            .saturating_add(skipped);
        entry.2.sum_num = entry.2.sum_num.max(part.sum_num);
        let room = self.max_items.saturating_sub(entry.2.items.len());
        let n = part.items.len();
        entry.2.items.extend(part.items.into_iter().take(room));
        self.dropped += n.saturating_sub(room) as u64;
        let done = entry.1 >= entry.2.sum_num as usize || entry.1 >= MAX_LIST_ITEMS;
        if done {
            self.pending.remove(&key).map(|(_, _, l)| l)
        } else {
            None
        }
    }

    /// Removes and returns lists idle for longer than the timeout.
    pub fn expire(&mut self, now_ms: u64) -> Vec<ListResponse<T>> {
        let old: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, (t, _, _))| now_ms.saturating_sub(*t) > self.timeout_ms)
            .map(|(k, _)| k.clone())
            .collect();
        old.into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|(_, _, l)| l))
            .collect()
    }
}

/// PTZ command bytes: `A5 0F 01 cmd d1 d2 (d3<<4) chk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtzCmd {
    pub cmd: u8,
    pub d1: u8,
    pub d2: u8,
    /// 0..15
    pub d3: u8,
}

pub mod ptz {
    pub const RIGHT: u8 = 0x01;
    pub const LEFT: u8 = 0x02;
    pub const DOWN: u8 = 0x04;
    pub const UP: u8 = 0x08;
    pub const ZOOM_IN: u8 = 0x10;
    pub const ZOOM_OUT: u8 = 0x20;
    pub const PRESET_SET: u8 = 0x81;
    pub const PRESET_CALL: u8 = 0x82;
    pub const PRESET_DELETE: u8 = 0x83;
}

impl PtzCmd {
    pub fn stop() -> Self {
        PtzCmd {
            cmd: 0,
            d1: 0,
            d2: 0,
            d3: 0,
        }
    }

    /// Pan/tilt/zoom motion; `directions` is an OR of [`ptz`] direction bits.
    pub fn motion(directions: u8, pan_speed: u8, tilt_speed: u8, zoom_speed: u8) -> Self {
        PtzCmd {
            cmd: directions & 0x3F,
            d1: pan_speed,
            d2: tilt_speed,
            d3: zoom_speed.min(15),
        }
    }

    pub fn preset(op: u8, number: u8) -> Self {
        PtzCmd {
            cmd: op,
            d1: 0,
            d2: number,
            d3: 0,
        }
    }

    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [
            0xA5,
            0x0F,
            0x01,
            self.cmd,
            self.d1,
            self.d2,
            (self.d3 & 0x0F) << 4,
            0,
        ];
        b[7] = b[..7].iter().fold(0u8, |a, x| a.wrapping_add(*x));
        b
    }

    pub fn to_hex(self) -> String {
        self.to_bytes().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
    }

    /// Parses 16 hex digits, checking the A5 lead byte and the checksum.
    pub fn parse_hex(s: &str) -> Option<PtzCmd> {
        let s = s.trim();
        if s.len() != 16 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        let chk = b[..7].iter().fold(0u8, |a, x| a.wrapping_add(*x));
        if b[0] != 0xA5 || chk != b[7] {
            return None;
        }
        Some(PtzCmd {
            cmd: b[3],
            d1: b[4],
            d2: b[5],
            d3: b[6] >> 4,
        })
    }
}

/// Body character set for built messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    Gb2312,
}

/// Serializes an XML body (declaration + `inner` without declaration) in `charset`.
pub fn encode_body(inner: &str, charset: Charset) -> Vec<u8> {
    match charset {
        Charset::Utf8 => {
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n{inner}").into_bytes()
        }
        Charset::Gb2312 => {
            let text = format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n{inner}");
            GBK.encode(&text).0.into_owned()
        }
    }
}

pub(crate) fn push_el(s: &mut String, name: &str, value: &str) {
    let _ = write!(s, "<{name}>{}</{name}>\r\n", escape(value));
}

pub(crate) fn head(root: Root, cmd: &str, sn: u32, device_id: &str) -> String {
    let mut s = format!("<{}>\r\n", root.as_str());
    push_el(&mut s, "CmdType", cmd);
    push_el(&mut s, "SN", &sn.to_string());
    push_el(&mut s, "DeviceID", device_id);
    s
}

/// `<Query>` for Catalog, DeviceInfo or DeviceStatus.
pub fn build_query(cmd_type: &str, sn: u32, device_id: &str) -> String {
    let mut s = head(Root::Query, cmd_type, sn, device_id);
    s.push_str("</Query>\r\n");
    s
}

/// RecordInfo query; times as `yyyy-MM-ddTHH:mm:ss`, `record_type` "all", "time", "alarm"...
pub fn build_record_info_query(q: &RecordInfoQuery) -> String {
    let mut s = head(Root::Query, "RecordInfo", q.sn, &q.device_id);
    push_el(&mut s, "StartTime", &q.start_time);
    push_el(&mut s, "EndTime", &q.end_time);
    push_el(&mut s, "Secrecy", "0");
    push_el(&mut s, "Type", &q.record_type);
    s.push_str("</Query>\r\n");
    s
}

pub fn build_ptz_control(sn: u32, device_id: &str, cmd: PtzCmd) -> String {
    let mut s = head(Root::Control, "DeviceControl", sn, device_id);
    push_el(&mut s, "PTZCmd", &cmd.to_hex());
    s.push_str("<Info>\r\n<ControlPriority>5</ControlPriority>\r\n</Info>\r\n</Control>\r\n");
    s
}

/// Force a key frame: `DeviceControl` with `<IFameCmd>Send</IFameCmd>` (GB/T 28181-2016
/// spells it "IFame").
pub fn build_key_frame_request(sn: u32, device_id: &str) -> String {
    let mut s = head(Root::Control, "DeviceControl", sn, device_id);
    push_el(&mut s, "IFameCmd", "Send");
    s.push_str("</Control>\r\n");
    s
}

/// `MediaStatus` notification (device side): 121 = the file being played back has ended.
pub fn build_media_status(sn: u32, device_id: &str, notify_type: u32) -> String {
    let mut s = head(Root::Notify, "MediaStatus", sn, device_id);
    push_el(&mut s, "NotifyType", &notify_type.to_string());
    s.push_str("</Notify>\r\n");
    s
}

pub fn build_keepalive(sn: u32, device_id: &str) -> String {
    let mut s = head(Root::Notify, "Keepalive", sn, device_id);
    push_el(&mut s, "Status", "OK");
    s.push_str("</Notify>\r\n");
    s
}

/// One Catalog response message (device side) carrying `items` of `sum_num`.
pub fn build_catalog_response(
    sn: u32,
    device_id: &str,
    sum_num: u32,
    items: &[CatalogItem],
) -> String {
    let mut s = head(Root::Response, "Catalog", sn, device_id);
    push_el(&mut s, "SumNum", &sum_num.to_string());
    let _ = write!(s, "<DeviceList Num=\"{}\">\r\n", items.len());
    for i in items {
        push_catalog_item(&mut s, i);
    }
    s.push_str("</DeviceList>\r\n</Response>\r\n");
    s
}

/// One `<Item>` of a Catalog list (response or NOTIFY); its `<Event>` when it has one.
pub(crate) fn push_catalog_item(s: &mut String, i: &CatalogItem) {
    s.push_str("<Item>\r\n");
    push_el(s, "DeviceID", &i.device_id);
    push_el(s, "Name", &i.name);
    push_el(s, "Manufacturer", &i.manufacturer);
    push_el(s, "Model", &i.model);
    push_el(s, "Owner", &i.owner);
    push_el(s, "CivilCode", &i.civil_code);
    push_el(s, "Address", &i.address);
    if let Some(p) = i.parental {
        push_el(s, "Parental", &p.to_string());
    }
    push_el(s, "ParentID", &i.parent_id);
    if let Some(r) = i.register_way {
        push_el(s, "RegisterWay", &r.to_string());
    }
    if let Some(r) = i.secrecy {
        push_el(s, "Secrecy", &r.to_string());
    }
    push_el(s, "Status", &i.status);
    if let Some(t) = i.ptz_type {
        s.push_str("<Info>\r\n");
        push_el(s, "PTZType", &t.to_string());
        s.push_str("</Info>\r\n");
    }
    if !i.event.is_empty() {
        push_el(s, "Event", &i.event);
    }
    s.push_str("</Item>\r\n");
}

pub fn build_device_info_response(sn: u32, info: &DeviceInfo) -> String {
    let mut s = head(Root::Response, "DeviceInfo", sn, &info.device_id);
    push_el(&mut s, "Result", &info.result);
    push_el(&mut s, "DeviceName", &info.device_name);
    push_el(&mut s, "Manufacturer", &info.manufacturer);
    push_el(&mut s, "Model", &info.model);
    push_el(&mut s, "Firmware", &info.firmware);
    if let Some(c) = info.channel {
        push_el(&mut s, "Channel", &c.to_string());
    }
    s.push_str("</Response>\r\n");
    s
}

pub fn build_record_info_response(
    sn: u32,
    sum_num: u32,
    device_id: &str,
    items: &[RecordItem],
) -> String {
    let mut s = head(Root::Response, "RecordInfo", sn, device_id);
    push_el(&mut s, "SumNum", &sum_num.to_string());
    let _ = write!(s, "<RecordList Num=\"{}\">\r\n", items.len());
    for i in items {
        s.push_str("<Item>\r\n");
        push_el(&mut s, "DeviceID", &i.device_id);
        push_el(&mut s, "Name", &i.name);
        push_el(&mut s, "FilePath", &i.file_path);
        push_el(&mut s, "Address", &i.address);
        push_el(&mut s, "StartTime", &i.start_time);
        push_el(&mut s, "EndTime", &i.end_time);
        if let Some(x) = i.secrecy {
            push_el(&mut s, "Secrecy", &x.to_string());
        }
        push_el(&mut s, "Type", &i.record_type);
        s.push_str("</Item>\r\n");
    }
    s.push_str("</RecordList>\r\n</Response>\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptz_bytes() {
        // Right at pan speed 0x1F: A5 0F 01 01 1F 00 00 chk
        let c = PtzCmd::motion(ptz::RIGHT, 0x1F, 0, 0);
        let b = c.to_bytes();
        assert_eq!(&b[..7], &[0xA5, 0x0F, 0x01, 0x01, 0x1F, 0x00, 0x00]);
        assert_eq!(b[7], 0xD5);
        assert_eq!(PtzCmd::parse_hex(&c.to_hex()), Some(c));
        let z = PtzCmd::motion(ptz::ZOOM_IN | ptz::UP, 0, 0x80, 20);
        assert_eq!(z.d3, 15);
        assert_eq!(PtzCmd::parse_hex(&z.to_hex()), Some(z));
        let p = PtzCmd::preset(ptz::PRESET_CALL, 3);
        assert_eq!(p.to_hex(), "A50F01820003003A");
        assert!(PtzCmd::parse_hex("A50F01820003003B").is_none());
        assert_eq!(PtzCmd::stop().to_hex(), "A50F0100000000B5");
    }

    #[test]
    fn lying_declarations() {
        let utf8 = "<?xml version=\"1.0\" encoding=\"GB2312\"?><Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>中文</DeviceID></Notify>";
        let (t, enc) = decode_body(utf8.as_bytes());
        assert_eq!(enc, UTF_8);
        assert!(t.contains("中文"));
        let gb = GBK.encode(&utf8.replace("GB2312", "UTF-8")).0.into_owned();
        let (t, enc) = decode_body(&gb);
        assert_eq!(enc, GB18030);
        assert!(t.contains("中文"));
        let d = Document::parse(&gb).unwrap();
        assert_eq!(d.device_id, "中文");
    }

    #[test]
    fn bad_xml() {
        for bad in [
            &b"<Notify><CmdType>Keepalive</CmdType>"[..],
            b"<Notify></Query>",
            b"<Notify><CmdType>x</CmdType><SN>abc</SN><DeviceID>1</DeviceID></Notify>",
            b"<Foo><CmdType>x</CmdType><SN>1</SN><DeviceID>1</DeviceID></Foo>",
            b"",
            b"<a>&bogus;</a>",
            b"<Notify/><Notify/>",
        ] {
            assert!(
                Document::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse_xml(&deep), Err(Error::TooDeep));
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(parse_xml(&many), Err(Error::TooManyElements));
    }

    #[test]
    fn entities_and_cdata() {
        let e = parse_xml("<a><b>x &amp; y &#20013;<![CDATA[<z>]]></b></a>").unwrap();
        assert_eq!(e.child_text("b"), Some("x & y 中<z>"));
    }

    #[test]
    fn builders_round_trip() {
        for charset in [Charset::Utf8, Charset::Gb2312] {
            for cmd in ["Catalog", "DeviceInfo", "DeviceStatus"] {
                let m = Manscdp::parse(&encode_body(&build_query(cmd, 9, "dev"), charset)).unwrap();
                let expected = match cmd {
                    "Catalog" => Manscdp::CatalogQuery {
                        sn: 9,
                        device_id: "dev".into(),
                    },
                    "DeviceInfo" => Manscdp::DeviceInfoQuery {
                        sn: 9,
                        device_id: "dev".into(),
                    },
                    _ => Manscdp::DeviceStatusQuery {
                        sn: 9,
                        device_id: "dev".into(),
                    },
                };
                assert_eq!(m, expected);
            }
            let q = RecordInfoQuery {
                sn: 5,
                device_id: "34020000001310000001".into(),
                start_time: "2020-06-09T00:00:00".into(),
                end_time: "2020-06-09T23:59:59".into(),
                record_type: "all".into(),
            };
            let body = encode_body(&build_record_info_query(&q), charset);
            assert_eq!(Manscdp::parse(&body).unwrap(), Manscdp::RecordInfoQuery(q));
            let item = RecordItem {
                device_id: "34020000001310000001".into(),
                name: "前门 <1> & co".into(),
                file_path: "/a".into(),
                address: "x".into(),
                start_time: "2020-06-09T00:00:00".into(),
                end_time: "2020-06-09T00:10:00".into(),
                secrecy: Some(0),
                record_type: "time".into(),
                file_size: None,
            };
            let body = encode_body(
                &build_record_info_response(
                    6,
                    2,
                    "34020000001310000001",
                    std::slice::from_ref(&item),
                ),
                charset,
            );
            let Manscdp::RecordInfo(list) = Manscdp::parse(&body).unwrap() else {
                panic!("record info")
            };
            assert_eq!((list.sn, list.sum_num), (6, 2));
            assert_eq!(list.items, vec![item]);
            let info = DeviceInfo {
                device_id: "dev".into(),
                result: "OK".into(),
                device_name: "摄像机".into(),
                manufacturer: "Hikvision".into(),
                model: "DS-2CD".into(),
                firmware: "V5".into(),
                channel: Some(1),
            };
            let body = encode_body(&build_device_info_response(3, &info), charset);
            assert_eq!(
                Manscdp::parse(&body).unwrap(),
                Manscdp::DeviceInfo { sn: 3, info }
            );
            let cmd = PtzCmd::motion(ptz::LEFT | ptz::DOWN, 10, 20, 3);
            let body = encode_body(&build_ptz_control(4, "dev", cmd), charset);
            assert_eq!(
                Manscdp::parse(&body).unwrap(),
                Manscdp::DeviceControl {
                    sn: 4,
                    device_id: "dev".into(),
                    ptz: Some(cmd),
                    key_frame: false,
                }
            );
            let body = encode_body(&build_key_frame_request(5, "dev"), charset);
            assert_eq!(
                Manscdp::parse(&body).unwrap(),
                Manscdp::DeviceControl {
                    sn: 5,
                    device_id: "dev".into(),
                    ptz: None,
                    key_frame: true,
                }
            );
            let body = encode_body(&build_keepalive(8, "dev"), charset);
            assert!(
                matches!(Manscdp::parse(&body).unwrap(), Manscdp::Keepalive(k) if k.sn == 8 && k.status_ok)
            );
        }
    }

    #[test]
    fn catalog_ptz_type_round_trip() {
        let item = CatalogItem {
            device_id: "34020000001310000001".into(),
            ptz_type: Some(1),
            ..Default::default()
        };
        let body = build_catalog_response(1, "34020000001320000001", 1, &[item]);
        let Manscdp::Catalog(l) = Manscdp::parse(body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(l.items[0].ptz_type, Some(1));
    }

    #[test]
    fn merge_by_sn() {
        let item = |id: &str| CatalogItem {
            device_id: id.into(),
            ..Default::default()
        };
        let mut m = ListMerger::new(10_000);
        let body1 = encode_body(
            &build_catalog_response(7, "dev", 3, &[item("a"), item("b")]),
            Charset::Gb2312,
        );
        let body2 = encode_body(
            &build_catalog_response(7, "dev", 3, &[item("c")]),
            Charset::Utf8,
        );
        let Manscdp::Catalog(p1) = Manscdp::parse(&body1).unwrap() else {
            panic!()
        };
        let Manscdp::Catalog(p2) = Manscdp::parse(&body2).unwrap() else {
            panic!()
        };
        assert!(m.add(p1, 0).is_none());
        // Another SN does not mix in.
        let other = ListResponse {
            sn: 8,
            device_id: "dev".into(),
            sum_num: 2,
            items: vec![item("x")],
        };
        assert!(m.add(other, 0).is_none());
        let all = m.add(p2, 1).unwrap();
        assert_eq!(all.items.len(), 3);
        assert_eq!(all.items[2].device_id, "c");
        assert_eq!(m.pending(), 1);
        assert_eq!(m.expire(20_000).len(), 1);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn merge_caps_kept_items_but_completes_at_sum_num() {
        let item = |i: usize| CatalogItem {
            device_id: format!("c{i}"),
            ..Default::default()
        };
        let mut m = ListMerger::with_max_items(10_000, 5);
        let part = |range: std::ops::Range<usize>| ListResponse {
            sn: 1,
            device_id: "dev".into(),
            sum_num: 10,
            items: range.map(item).collect(),
        };
        assert!(m.add(part(0..4), 0).is_none());
        // Two items the caller dropped still count towards SumNum.
        assert!(m.add_part(part(4..6), 2, 0).is_none());
        let all = m.add(part(8..10), 0).unwrap();
        assert_eq!(all.items.len(), 5);
        assert_eq!(m.dropped, 3);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn media_status_round_trip() {
        let body = encode_body(
            &build_media_status(7, "34020000001320000001", 121),
            Charset::Gb2312,
        );
        assert_eq!(
            Manscdp::parse(&body).unwrap(),
            Manscdp::MediaStatus {
                sn: 7,
                device_id: "34020000001320000001".into(),
                notify_type: 121
            }
        );
    }
}
