//! Output side of psdemux: caps per codec, and output buffers built from shared input memory.

use std::collections::VecDeque;

use crate::demux::{AudioInfo, Range};
use crate::ps::Codec;

/// A GstBuffer holds at most 16 memories; frames with more ranges are copied once instead of
/// letting GStreamer merge memories repeatedly.
const MAX_MEMORIES: usize = 16;

pub(super) fn caps_for(codec: Codec, audio: AudioInfo) -> gst::Caps {
    let mono8k = |name: &str| {
        gst::Caps::builder(name)
            .field("rate", audio.rate.unwrap_or(8000) as i32)
            .field("channels", audio.channels.unwrap_or(1) as i32)
            .build()
    };
    match codec {
        Codec::H264 => gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
        Codec::H265 => gst::Caps::builder("video/x-h265")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
        Codec::Mpeg1Video | Codec::Mpeg2Video | Codec::Mpeg4Video => {
            let v = match codec {
                Codec::Mpeg1Video => 1,
                Codec::Mpeg2Video => 2,
                _ => 4,
            };
            gst::Caps::builder("video/mpeg")
                .field("mpegversion", v)
                .field("systemstream", false)
                .build()
        }
        Codec::SvacVideo => gst::Caps::new_empty_simple("video/x-svac"),
        Codec::SvacAudio => gst::Caps::new_empty_simple("audio/x-svac"),
        Codec::MpegAudio => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .build(),
        Codec::Aac => {
            let mut b = gst::Caps::builder("audio/mpeg")
                .field("mpegversion", 4i32)
                .field("stream-format", "adts");
            if let Some(r) = audio.rate {
                b = b.field("rate", r as i32);
            }
            if let Some(c) = audio.channels.filter(|c| *c > 0) {
                b = b.field("channels", c as i32);
            }
            b.build()
        }
        Codec::G711Alaw => mono8k("audio/x-alaw"),
        Codec::G711Mulaw => mono8k("audio/x-mulaw"),
        Codec::G7221 => gst::Caps::builder("audio/G7221")
            .field("rate", audio.rate.unwrap_or(16000) as i32)
            .field("channels", 1i32)
            .build(),
        Codec::G7231 => mono8k("audio/G723"),
        Codec::G729 => mono8k("audio/G729"),
    }
}

/// Builds the output buffer of a frame from the input buffers, sharing their memory.
pub(super) fn build_buffer(
    inputs: &VecDeque<(u64, gst::Buffer)>,
    ranges: &[Range],
    size: usize,
) -> Option<gst::Buffer> {
    let mut pieces: Vec<(usize, usize, usize)> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let mut off = r.offset;
        let mut remaining = r.len;
        let mut idx = inputs.partition_point(|(o, b)| o + b.size() as u64 <= off);
        while remaining > 0 {
            let (o, b) = inputs.get(idx)?;
            if *o > off {
                return None;
            }
            let start = (off - o) as usize;
            let n = (b.size() - start).min(remaining);
            pieces.push((idx, start, n));
            off += n as u64;
            remaining -= n;
            idx += 1;
        }
    }
    if pieces.len() == 1 {
        let (idx, start, n) = pieces[0];
        return inputs[idx]
            .1
            .copy_region(gst::BufferCopyFlags::MEMORY, start..start + n)
            .ok();
    }
    if pieces.len() <= MAX_MEMORIES {
        let mut out = gst::Buffer::new();
        {
            let out_ref = out.get_mut()?;
            for (idx, start, n) in pieces {
                let sub = inputs[idx]
                    .1
                    .copy_region(gst::BufferCopyFlags::MEMORY, start..start + n)
                    .ok()?;
                for mem in sub.iter_memories_owned() {
                    out_ref.append_memory(mem);
                }
            }
        }
        return Some(out);
    }
    // Too many pieces for one GstBuffer: one copy of the frame.
    let mut out = gst::Buffer::with_size(size).ok()?;
    {
        let out_ref = out.get_mut()?;
        let mut map = out_ref.map_writable().ok()?;
        let mut pos = 0;
        for (idx, start, n) in pieces {
            let src = inputs[idx].1.map_readable().ok()?;
            map.get_mut(pos..pos + n)?
                .copy_from_slice(src.get(start..start + n)?);
            pos += n;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> VecDeque<(u64, gst::Buffer)> {
        gst::init().unwrap();
        let a: Vec<u8> = (0..100u8).collect();
        let b: Vec<u8> = (100..200u8).collect();
        VecDeque::from([
            (1000, gst::Buffer::from_mut_slice(a)),
            (1100, gst::Buffer::from_mut_slice(b)),
        ])
    }

    #[test]
    fn few_ranges_share_input_memory() {
        let inputs = inputs();
        let ranges = [
            Range {
                offset: 1010,
                len: 5,
            },
            Range {
                offset: 1095,
                len: 10,
            }, // spans both inputs
        ];
        let out = build_buffer(&inputs, &ranges, 15).unwrap();
        assert_eq!(out.n_memory(), 3);
        // Same memory as the input, not a copy.
        let inmap = inputs[0].1.map_readable().unwrap();
        let outmem = out.peek_memory(0).map_readable().unwrap();
        assert_eq!(outmem.as_ptr(), inmap[10..].as_ptr());
        drop((outmem, inmap));
        // (Mapping the whole multi-memory buffer merges it, so check the bytes last.)
        let expected: Vec<u8> = (10..15u8).chain(95..105).collect();
        assert_eq!(out.map_readable().unwrap().as_slice(), expected);
    }

    #[test]
    fn many_ranges_are_copied_once() {
        let inputs = inputs();
        let ranges: Vec<Range> = (0..20)
            .map(|i| Range {
                offset: 1000 + i * 10,
                len: 3,
            })
            .collect();
        let out = build_buffer(&inputs, &ranges, 60).unwrap();
        assert_eq!(out.n_memory(), 1);
        let expected: Vec<u8> = (0..20u8).flat_map(|i| i * 10..i * 10 + 3).collect();
        assert_eq!(out.map_readable().unwrap().as_slice(), expected);
        // Ranges no longer held give no buffer rather than garbage.
        assert!(
            build_buffer(
                &inputs,
                &[Range {
                    offset: 900,
                    len: 5
                }],
                5
            )
            .is_none()
        );
    }
}
