//! RTMP in the gateway: publishers (ffmpeg, OBS: `rtmp://host:1935/live/x` publishes path
//! `live/x`) and readers (ffplay, ffprobe) of any path, with the gateway's users (credentials
//! in the query, `?user=...&pass=...`, as MediaMTX takes them).
//!
//! GStreamer has no RTMP server: the protocol (handshake, chunk stream, AMF0 commands) is
//! ours, GStreamer-free and bounded ([`chunk::Limits`]): [`handshake`], [`chunk`], [`amf0`],
//! [`session`], [`path`], [`flv`]. The listener is [`server`]; [`media`] is the GStreamer
//! glue (`appsrc ! flvdemux` for publishers, `flvmux streamable=true` for readers).

pub mod amf0;
pub mod chunk;
pub mod flv;
pub mod handshake;
pub mod media;
pub mod path;
pub mod server;
pub mod session;

pub use server::{Outbox, Paths, Publisher, Refusal, Server, Settings, Stats};
