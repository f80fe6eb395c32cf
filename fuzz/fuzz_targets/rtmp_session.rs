#![no_main]
// What an RTMP peer sends after the handshake (chunks, control messages, AMF0 commands), in
// the pieces the first byte chooses, through the server session; also the AMF0 decoder and
// FLV tag reader alone. Never a panic, whatever the bytes; the session's limits hold.
use gst_ipcam_gateway::rtmp::chunk::Limits;
use gst_ipcam_gateway::rtmp::session::{Event, Session};
use gst_ipcam_gateway::rtmp::{amf0, flv};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = amf0::decode_all(data);
    let mut tags = flv::TagReader::new(1 << 16);
    tags.feed(data);
    while let Ok(Some(_)) = tags.next_tag() {}

    let Some((&step, rest)) = data.split_first() else { return };
    let limits = Limits {
        max_message_len: 1 << 16,
        max_pending_bytes: 1 << 17,
        ..Limits::default()
    };
    let mut s = Session::new(limits);
    for piece in rest.chunks(usize::from(step).max(1)) {
        match s.feed(piece) {
            Ok(events) => {
                for e in events {
                    match e {
                        Event::Publish { .. } => s.accept_publish("p"),
                        Event::Play { .. } => {
                            let _ = s.accept_play("p");
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => return,
        }
        let _ = s.take_output();
    }
});
