//! MPEG-2 Program Stream (ISO/IEC 13818-1 §2.5) vocabulary shared by the demuxer and the
//! muxer: start codes, stream ids, PSM stream types and the codecs cameras put in them.
//! GStreamer-free.

/// `00 00 01 BA`: pack header.
pub const PACK_START: u8 = 0xBA;
/// `00 00 01 BB`: system header.
pub const SYSTEM_HEADER: u8 = 0xBB;
/// `00 00 01 BC`: program stream map.
pub const PSM: u8 = 0xBC;
/// `00 00 01 B9`: MPEG program end code.
pub const PROGRAM_END: u8 = 0xB9;
/// Private stream 1 (Hikvision private data lives here; skipped).
pub const PRIVATE_STREAM_1: u8 = 0xBD;
/// Padding stream.
pub const PADDING_STREAM: u8 = 0xBE;
/// Private stream 2.
pub const PRIVATE_STREAM_2: u8 = 0xBF;
/// Program stream directory.
pub const PS_DIRECTORY: u8 = 0xFF;

/// First video stream id (0xE0..=0xEF).
pub const VIDEO_STREAM_FIRST: u8 = 0xE0;
/// First audio stream id (0xC0..=0xDF).
pub const AUDIO_STREAM_FIRST: u8 = 0xC0;

/// The 90 kHz system clock of PTS/DTS, in ticks per second.
pub const PTS_CLOCK: u64 = 90_000;
/// PTS/DTS are 33-bit counters.
pub const PTS_MODULO: u64 = 1 << 33;

pub fn is_video_stream_id(id: u8) -> bool {
    (0xE0..=0xEF).contains(&id)
}

pub fn is_audio_stream_id(id: u8) -> bool {
    (0xC0..=0xDF).contains(&id)
}

/// Elementary stream codecs as GB28181 cameras and platforms use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Mpeg1Video,
    Mpeg2Video,
    Mpeg4Video,
    H264,
    H265,
    SvacVideo,
    MpegAudio,
    Aac,
    G711Alaw,
    G711Mulaw,
    G7221,
    G7231,
    G729,
    SvacAudio,
}

impl Codec {
    /// The PSM `stream_type` GB28181 assigns to a stream type byte, if known.
    pub fn from_stream_type(stream_type: u8) -> Option<Codec> {
        Some(match stream_type {
            0x01 => Codec::Mpeg1Video,
            0x02 => Codec::Mpeg2Video,
            0x03 | 0x04 => Codec::MpegAudio,
            0x0F => Codec::Aac,
            0x10 => Codec::Mpeg4Video,
            0x1B => Codec::H264,
            0x24 => Codec::H265,
            0x80 => Codec::SvacVideo,
            0x90 => Codec::G711Alaw,
            0x91 => Codec::G711Mulaw,
            0x92 => Codec::G7221,
            0x93 => Codec::G7231,
            0x99 => Codec::G729,
            0x9B => Codec::SvacAudio,
            _ => return None,
        })
    }

    /// The PSM `stream_type` written for this codec.
    pub fn stream_type(self) -> u8 {
        match self {
            Codec::Mpeg1Video => 0x01,
            Codec::Mpeg2Video => 0x02,
            Codec::MpegAudio => 0x04,
            Codec::Aac => 0x0F,
            Codec::Mpeg4Video => 0x10,
            Codec::H264 => 0x1B,
            Codec::H265 => 0x24,
            Codec::SvacVideo => 0x80,
            Codec::G711Alaw => 0x90,
            Codec::G711Mulaw => 0x91,
            Codec::G7221 => 0x92,
            Codec::G7231 => 0x93,
            Codec::G729 => 0x99,
            Codec::SvacAudio => 0x9B,
        }
    }

    pub fn is_video(self) -> bool {
        matches!(
            self,
            Codec::Mpeg1Video
                | Codec::Mpeg2Video
                | Codec::Mpeg4Video
                | Codec::H264
                | Codec::H265
                | Codec::SvacVideo
        )
    }

    /// Short name used in logs and statistics.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Mpeg1Video => "mpeg1video",
            Codec::Mpeg2Video => "mpeg2video",
            Codec::Mpeg4Video => "mpeg4video",
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::SvacVideo => "svac-video",
            Codec::MpegAudio => "mpeg-audio",
            Codec::Aac => "aac",
            Codec::G711Alaw => "alaw",
            Codec::G711Mulaw => "mulaw",
            Codec::G7221 => "g722.1",
            Codec::G7231 => "g723.1",
            Codec::G729 => "g729",
            Codec::SvacAudio => "svac-audio",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_type_round_trips() {
        for st in 0u8..=255 {
            if let Some(codec) = Codec::from_stream_type(st) {
                // 0x03 (MPEG-1 audio) is written back as 0x04.
                if st != 0x03 {
                    assert_eq!(codec.stream_type(), st, "{codec:?}");
                }
            }
        }
        assert!(Codec::H265.is_video());
        assert!(!Codec::G711Alaw.is_video());
    }
}
