//! The server side of one RTMP connection after the handshake: commands in (connect,
//! createStream, publish, play, deleteStream), answers and media out, as a state machine
//! over bytes. The application decides on publish/play requests ([`Event`]) and answers with
//! [`Session::accept_publish`], [`Session::accept_play`] or [`Session::refuse`].
//! GStreamer-free.

use super::amf0::{self, Value};
use super::chunk::{self, ChunkReader, ChunkWriter, Message};
use std::fmt;

/// Our chunk size (what ffmpeg and OBS use).
pub const OUT_CHUNK_SIZE: usize = 4096;
/// Acknowledgement window told to the peer, and after which we acknowledge.
pub const WINDOW: u32 = 2_500_000;
/// Message streams a connection may create.
pub const MAX_STREAMS: u32 = 8;
/// Longest stream name + app taken.
pub const MAX_NAME_LEN: usize = 1024;

const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_AUDIO: u32 = 4;
const CSID_DATA: u32 = 5;
const CSID_VIDEO: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// Script data (onMetaData), `@setDataFrame` removed.
    Data,
}

impl MediaKind {
    /// RTMP message type = FLV tag type.
    pub fn type_id(self) -> u8 {
        match self {
            MediaKind::Audio => 8,
            MediaKind::Video => 9,
            MediaKind::Data => 18,
        }
    }

    pub fn from_type_id(t: u8) -> Option<MediaKind> {
        match t {
            8 => Some(MediaKind::Audio),
            9 => Some(MediaKind::Video),
            18 => Some(MediaKind::Data),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `app` and stream name as sent (queries included); see [`super::path`].
    Publish {
        app: String,
        name: String,
    },
    Play {
        app: String,
        name: String,
    },
    /// A publisher's frame (only after [`Session::accept_publish`]).
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Vec<u8>,
    },
    /// deleteStream / FCUnpublish / closeStream: the publisher or player is done.
    Ended,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Chunk(chunk::Error),
    Amf(amf0::Error),
    /// A command out of place or malformed.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Chunk(e) => e.fmt(f),
            Error::Amf(e) => e.fmt(f),
            Error::Protocol(m) => f.write_str(m),
        }
    }
}

impl From<chunk::Error> for Error {
    fn from(e: chunk::Error) -> Self {
        Error::Chunk(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    None,
    /// Asked, waiting for the application.
    Pending,
    Publishing,
    Playing,
    Refused,
}

pub struct Session {
    reader: ChunkReader,
    writer: ChunkWriter,
    app: Option<String>,
    streams: u32,
    /// The message stream of the publish/play request.
    stream_id: u32,
    role: Role,
    received: u64,
    acknowledged: u64,
    out: Vec<u8>,
}

fn command(name: &str, txid: f64, args: &[Value]) -> Vec<u8> {
    let mut values = vec![Value::String(name.into()), Value::Number(txid)];
    values.extend_from_slice(args);
    amf0::encode_all(&values)
}

fn status(level: &str, code: &str, description: &str) -> Value {
    Value::object(&[
        ("level", Value::String(level.into())),
        ("code", Value::String(code.into())),
        ("description", Value::String(description.into())),
    ])
}

impl Session {
    pub fn new(limits: chunk::Limits) -> Session {
        Session {
            reader: ChunkReader::new(limits),
            writer: ChunkWriter::default(),
            app: None,
            streams: 0,
            stream_id: 0,
            role: Role::None,
            received: 0,
            acknowledged: 0,
            out: Vec::new(),
        }
    }

    /// Bytes to send to the peer (answers), emptied.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        self.writer.write(
            &mut self.out,
            &Message {
                csid,
                timestamp: 0,
                type_id,
                stream_id,
                payload,
            },
        );
    }

    /// Parses what the peer sent; answers go to [`take_output`](Self::take_output).
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Event>, Error> {
        self.received += data.len() as u64;
        self.reader.feed(data);
        let mut events = Vec::new();
        while let Some(m) = self.reader.next_message()? {
            self.message(m, &mut events)?;
        }
        if self.received - self.acknowledged >= u64::from(WINDOW) {
            self.acknowledged = self.received;
            let seq = (self.received as u32).to_be_bytes().to_vec();
            self.send(CSID_CONTROL, 3, 0, seq);
        }
        Ok(events)
    }

    fn message(&mut self, m: Message, events: &mut Vec<Event>) -> Result<(), Error> {
        match m.type_id {
            1 => {
                let b = m
                    .payload
                    .get(..4)
                    .ok_or(Error::Protocol("short Set Chunk Size".into()))?;
                self.reader
                    .set_chunk_size(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))?;
            }
            2 => {
                if let Some(b) = m.payload.get(..4) {
                    self.reader
                        .abort(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            20 => self.command(&m.payload, m.stream_id, events)?,
            // AMF3 command: a format byte, then AMF0.
            17 => self.command(m.payload.get(1..).unwrap_or_default(), m.stream_id, events)?,
            8 | 9 | 18 if self.role == Role::Publishing && m.stream_id == self.stream_id => {
                let kind = MediaKind::from_type_id(m.type_id).expect("matched above");
                let mut payload = m.payload;
                const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
                if kind == MediaKind::Data && payload.starts_with(SET_DATA_FRAME) {
                    payload.drain(..SET_DATA_FRAME.len());
                }
                events.push(Event::Media {
                    kind,
                    timestamp: m.timestamp,
                    payload,
                });
            }
            // Acknowledgements, user control, window/bandwidth, media of no publisher.
            _ => {}
        }
        Ok(())
    }

    fn command(
        &mut self,
        payload: &[u8],
        stream_id: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), Error> {
        let values = amf0::decode_all(payload).map_err(Error::Amf)?;
        let name = values.first().and_then(Value::as_str).unwrap_or_default();
        let txid = values.get(1).and_then(Value::as_number).unwrap_or(0.0);
        let string_arg = |i: usize| -> Result<String, Error> {
            let s = values.get(i).and_then(Value::as_str).unwrap_or_default();
            if s.len() > MAX_NAME_LEN {
                return Err(Error::Protocol(format!(
                    "{name}: name longer than {MAX_NAME_LEN}"
                )));
            }
            Ok(s.to_string())
        };
        match name {
            "connect" => {
                if self.app.is_some() {
                    return Err(Error::Protocol("connect twice".into()));
                }
                let app = values
                    .get(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Value::as_str);
                let app = app.unwrap_or_default();
                if app.len() > MAX_NAME_LEN {
                    return Err(Error::Protocol("connect: app too long".into()));
                }
                self.app = Some(app.to_string());
                self.send(CSID_CONTROL, 5, 0, WINDOW.to_be_bytes().to_vec());
                let mut bw = WINDOW.to_be_bytes().to_vec();
                bw.push(2);
                self.send(CSID_CONTROL, 6, 0, bw);
                self.send(
                    CSID_CONTROL,
                    1,
                    0,
                    (OUT_CHUNK_SIZE as u32).to_be_bytes().to_vec(),
                );
                self.writer.set_chunk_size(OUT_CHUNK_SIZE);
                let props = Value::object(&[
                    ("fmsVer", Value::String("FMS/3,0,1,123".into())),
                    ("capabilities", Value::Number(31.0)),
                ]);
                let mut info = status(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                );
                if let Value::Object(p) = &mut info {
                    p.push(("objectEncoding".into(), Value::Number(0.0)));
                }
                let answer = command("_result", txid, &[props, info]);
                self.send(CSID_COMMAND, 20, 0, answer);
            }
            "createStream" => {
                self.connected()?;
                if self.streams >= MAX_STREAMS {
                    return Err(Error::Protocol(format!("more than {MAX_STREAMS} streams")));
                }
                self.streams += 1;
                let answer = command(
                    "_result",
                    txid,
                    &[Value::Null, Value::Number(self.streams.into())],
                );
                self.send(CSID_COMMAND, 20, 0, answer);
            }
            "publish" | "play" => {
                self.connected()?;
                if self.role != Role::None {
                    return Err(Error::Protocol(format!("{name} after publish/play")));
                }
                if stream_id == 0 || stream_id > self.streams {
                    return Err(Error::Protocol(format!(
                        "{name} on stream {stream_id} never created"
                    )));
                }
                let stream = string_arg(3)?;
                self.stream_id = stream_id;
                self.role = Role::Pending;
                let app = self.app.clone().unwrap_or_default();
                events.push(if name == "publish" {
                    Event::Publish { app, name: stream }
                } else {
                    Event::Play { app, name: stream }
                });
            }
            "deleteStream" | "closeStream" | "FCUnpublish" => {
                if matches!(self.role, Role::Publishing | Role::Playing) {
                    events.push(Event::Ended);
                }
            }
            // releaseStream, FCPublish, getStreamLength, _checkbw, ...: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn connected(&self) -> Result<(), Error> {
        match self.app {
            Some(_) => Ok(()),
            None => Err(Error::Protocol("command before connect".into())),
        }
    }

    fn on_status(&mut self, level: &str, code: &str, description: &str) {
        let msg = command(
            "onStatus",
            0.0,
            &[Value::Null, status(level, code, description)],
        );
        self.send(CSID_DATA, 20, self.stream_id, msg);
    }

    pub fn accept_publish(&mut self, path: &str) {
        self.role = Role::Publishing;
        self.on_status(
            "status",
            "NetStream.Publish.Start",
            &format!("{path} is now published."),
        );
    }

    /// Starts a player; its frames are written with the returned [`MediaWriter`].
    pub fn accept_play(&mut self, path: &str) -> MediaWriter {
        self.role = Role::Playing;
        // User control Stream Begin.
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&self.stream_id.to_be_bytes());
        self.send(CSID_CONTROL, 4, 0, begin);
        self.on_status(
            "status",
            "NetStream.Play.Reset",
            &format!("Playing and resetting {path}."),
        );
        self.on_status(
            "status",
            "NetStream.Play.Start",
            &format!("Started playing {path}."),
        );
        let mut writer = ChunkWriter::default();
        writer.set_chunk_size(OUT_CHUNK_SIZE);
        MediaWriter {
            writer,
            stream_id: self.stream_id,
        }
    }

    /// Refuses the pending request with an error status (`NetStream.Publish.BadName`,
    /// `NetStream.Play.StreamNotFound`, ...); the connection should close after sending it.
    pub fn refuse(&mut self, code: &str, description: &str) {
        self.role = Role::Refused;
        self.on_status("error", code, description);
    }
}

/// Writes a player's frames as chunks (our chunk size, the play request's stream).
pub struct MediaWriter {
    writer: ChunkWriter,
    stream_id: u32,
}

impl MediaWriter {
    pub fn encode(&self, kind: MediaKind, timestamp: u32, payload: Vec<u8>) -> Vec<u8> {
        let csid = match kind {
            MediaKind::Audio => CSID_AUDIO,
            MediaKind::Video => CSID_VIDEO,
            MediaKind::Data => CSID_DATA,
        };
        let mut out = Vec::with_capacity(payload.len() + payload.len() / OUT_CHUNK_SIZE + 16);
        self.writer.write(
            &mut out,
            &Message {
                csid,
                timestamp,
                type_id: kind.type_id(),
                stream_id: self.stream_id,
                payload,
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side: commands as chunks.
    fn client_command(stream_id: u32, values: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        ChunkWriter::default().write(
            &mut out,
            &Message {
                csid: 3,
                timestamp: 0,
                type_id: 20,
                stream_id,
                payload: amf0::encode_all(values),
            },
        );
        out
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn answers(bytes: &[u8]) -> Vec<Message> {
        let mut r = ChunkReader::new(chunk::Limits::default());
        r.feed(bytes);
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            if m.type_id == 1 {
                let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                r.set_chunk_size(size).unwrap();
            }
            out.push(m);
        }
        out
    }

    #[test]
    fn publish_flow_as_ffmpeg_sends_it() {
        let mut s_ = Session::new(chunk::Limits::default());
        let connect = Value::object(&[("app", s("live")), ("tcUrl", s("rtmp://h/live"))]);
        let mut all = Vec::new();
        assert!(
            s_.feed(&client_command(
                0,
                &[s("connect"), Value::Number(1.0), connect]
            ))
            .unwrap()
            .is_empty()
        );
        all.extend(s_.take_output());
        s_.feed(&client_command(
            0,
            &[s("releaseStream"), Value::Number(2.0), Value::Null, s("x")],
        ))
        .unwrap();
        s_.feed(&client_command(
            0,
            &[s("createStream"), Value::Number(4.0), Value::Null],
        ))
        .unwrap();
        all.extend(s_.take_output());
        let ev = s_
            .feed(&client_command(
                1,
                &[
                    s("publish"),
                    Value::Number(5.0),
                    Value::Null,
                    s("x?user=a"),
                    s("live"),
                ],
            ))
            .unwrap();
        assert_eq!(
            ev,
            vec![Event::Publish {
                app: "live".into(),
                name: "x?user=a".into()
            }]
        );
        s_.accept_publish("live/x");
        all.extend(s_.take_output());
        let msgs = answers(&all);
        let types: Vec<u8> = msgs.iter().map(|m| m.type_id).collect();
        assert_eq!(types, vec![5, 6, 1, 20, 20, 20]);
        let result = amf0::decode_all(&msgs[3].payload).unwrap();
        assert_eq!(result[0], s("_result"));
        assert_eq!(
            result[3].get("code"),
            Some(&s("NetConnection.Connect.Success"))
        );
        let created = amf0::decode_all(&msgs[4].payload).unwrap();
        assert_eq!(created[3], Value::Number(1.0));
        let started = amf0::decode_all(&msgs[5].payload).unwrap();
        assert_eq!(started[3].get("code"), Some(&s("NetStream.Publish.Start")));
        // Media on stream 1 comes out; onMetaData loses its @setDataFrame.
        let mut media = Vec::new();
        let mut w = ChunkWriter::default();
        w.set_chunk_size(4096);
        let mut meta = amf0::encode_all(&[s("@setDataFrame"), s("onMetaData")]);
        meta.extend(amf0::encode_all(&[Value::EcmaArray(vec![])]));
        for (t, p) in [(18u8, meta), (9, vec![0x17, 0, 0, 0, 0, 1])] {
            w.write(
                &mut media,
                &Message {
                    csid: 4,
                    timestamp: 0,
                    type_id: t,
                    stream_id: 1,
                    payload: p,
                },
            );
        }
        let mut size = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
        size.extend_from_slice(&4096u32.to_be_bytes());
        s_.feed(&size).unwrap();
        let ev = s_.feed(&media).unwrap();
        assert_eq!(ev.len(), 2);
        let Event::Media {
            kind: MediaKind::Data,
            payload,
            ..
        } = &ev[0]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(amf0::decode_all(payload).unwrap()[0], s("onMetaData"));
        assert!(matches!(
            ev[1],
            Event::Media {
                kind: MediaKind::Video,
                ..
            }
        ));
    }

    /// A session after `connect` to app `live`.
    fn connected() -> Session {
        let mut s_ = Session::new(chunk::Limits::default());
        let connect = Value::object(&[("app", s("live"))]);
        let cmd = client_command(0, &[s("connect"), Value::Number(1.0), connect]);
        s_.feed(&cmd).unwrap();
        s_
    }

    #[test]
    fn out_of_order_and_refused() {
        let mut s_ = Session::new(chunk::Limits::default());
        // play before connect
        assert!(
            s_.feed(&client_command(
                1,
                &[s("play"), Value::Number(1.0), Value::Null, s("x")]
            ))
            .is_err()
        );
        let mut s_ = connected();
        // play on a stream never created
        assert!(
            s_.feed(&client_command(
                1,
                &[s("play"), Value::Number(2.0), Value::Null, s("x")]
            ))
            .is_err()
        );
        let mut s_ = connected();
        for _ in 0..MAX_STREAMS {
            s_.feed(&client_command(
                0,
                &[s("createStream"), Value::Number(2.0), Value::Null],
            ))
            .unwrap();
        }
        assert!(
            s_.feed(&client_command(
                0,
                &[s("createStream"), Value::Number(2.0), Value::Null]
            ))
            .is_err()
        );
        s_.take_output();
        s_.feed(&client_command(
            1,
            &[s("publish"), Value::Number(3.0), Value::Null, s("x")],
        ))
        .unwrap();
        s_.refuse("NetStream.Publish.BadName", "no");
        let msgs = answers(&s_.take_output());
        let v = amf0::decode_all(&msgs[0].payload).unwrap();
        assert_eq!(v[3].get("level"), Some(&s("error")));
        // Media of a refused publisher is dropped.
        let mut media = Vec::new();
        ChunkWriter::default().write(
            &mut media,
            &Message {
                csid: 4,
                timestamp: 0,
                type_id: 9,
                stream_id: 1,
                payload: vec![1],
            },
        );
        assert!(s_.feed(&media).unwrap().is_empty());
    }

    /// The fuzz target's body over random bytes and mutations of a real publish (a short
    /// stand-in for `make fuzz`): no panic, the limits hold.
    #[test]
    fn random_and_mutated_input() {
        let seed_input = include_bytes!("../../../../fuzz/corpus/rtmp_session/publish");
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let mut data: Vec<u8> = if round % 2 == 0 {
                seed_input[1..].to_vec()
            } else {
                (0..rnd() % 600).map(|_| rnd() as u8).collect()
            };
            for _ in 0..rnd() % 8 {
                if !data.is_empty() {
                    let at = rnd() as usize % data.len();
                    data[at] = rnd() as u8;
                }
            }
            let mut s_ = Session::new(chunk::Limits::default());
            let step = (rnd() % 64 + 1) as usize;
            for piece in data.chunks(step) {
                match s_.feed(piece) {
                    Ok(events) => {
                        for e in events {
                            match e {
                                Event::Publish { .. } => s_.accept_publish("p"),
                                Event::Play { .. } => drop(s_.accept_play("p")),
                                _ => {}
                            }
                        }
                    }
                    Err(_) => break,
                }
                s_.take_output();
                assert!(s_.reader.buffered() <= 65_536 + 18 + step);
            }
        }
    }
}
