//! Stream bookkeeping and access-unit assembly: codec decisions (PSM vs payload), where
//! access units start (aligned muxers, or scanning payloads for muxers that do not align PES to
//! AUs), key-frame checks, drops after loss, size limits.

use super::*;

impl Demuxer {
    pub(super) fn stream_mut(&mut self, idx: usize) -> &mut Stream {
        self.streams[idx].get_or_insert_with(|| Stream::new(0xC0 + idx as u8))
    }

    pub(super) fn announce(&mut self, idx: usize, audio: AudioInfo, out: &mut Vec<Event>) {
        let s = self.stream_mut(idx);
        let codec = s.codec();
        let audio = match s.announced {
            // Keep what earlier data told us about the audio when nothing new is known.
            Some((c, a)) if c == codec && audio == AudioInfo::default() => a,
            _ => audio,
        };
        if s.announced == Some((codec, audio)) {
            return;
        }
        let stream_id = s.id;
        s.stats.codec = Some(codec);
        let ev = if s.announced.is_none() {
            Event::StreamAdded {
                stream_id,
                codec,
                audio,
            }
        } else {
            Event::StreamChanged {
                stream_id,
                codec,
                audio,
            }
        };
        s.announced = Some((codec, audio));
        out.push(ev);
    }

    pub(super) fn handle_psm(&mut self, body: &[u8], out: &mut Vec<Event>) {
        let mut entries = std::mem::take(&mut self.psm_scratch);
        headers::parse_psm(body, &mut entries);
        self.map_known = true;
        for e in &entries {
            let (Some(idx), Some(codec)) = (stream_index(e.stream_id), e.codec) else {
                continue;
            };
            if codec.is_video() != ps::is_video_stream_id(e.stream_id) {
                continue;
            }
            let s = self.stream_mut(idx);
            if s.psm_codec != Some(codec) {
                s.psm_codec = Some(codec);
                s.payload_codec = None;
            }
            self.announce(idx, AudioInfo::default(), out);
        }
        self.psm_scratch = entries;
    }

    /// Decides the stream's codec from its PSM entry and what the payload looks like; `None`
    /// for audio that waits for the first PSM to tell its codec ([`AUDIO_PSM_WAIT_PES`]).
    pub(super) fn resolve_codec(
        &mut self,
        idx: usize,
        first: &[u8],
        out: &mut Vec<Event>,
    ) -> Option<Codec> {
        let map_known = self.map_known;
        let s = self.stream_mut(idx);
        if s.is_video() {
            if let Some(c) = probe::probe_video(first)
                && !(c == Codec::Mpeg2Video && s.psm_codec == Some(Codec::Mpeg1Video))
            {
                s.payload_codec = Some(c);
            } else if s.payload_codec.is_none()
                && s.psm_codec.is_none()
                && s.guessed_codec.is_none()
            {
                s.guessed_codec = probe::guess_video(first);
            }
        } else {
            match probe::probe_audio(first) {
                Some(Codec::Aac) => s.payload_codec = Some(Codec::Aac),
                Some(c) if matches!(s.psm_codec, None | Some(Codec::MpegAudio)) => {
                    s.payload_codec = Some(c)
                }
                _ => {}
            }
            if s.payload_codec.is_none()
                && s.psm_codec.is_none()
                && s.announced.is_none()
                && !map_known
                && s.waited_for_psm < AUDIO_PSM_WAIT_PES
            {
                s.waited_for_psm += 1;
                return None;
            }
        }
        let codec = s.codec();
        let audio = match probe::parse_adts(first) {
            Some(a) if codec == Codec::Aac => AudioInfo {
                rate: Some(a.rate),
                channels: Some(a.channels),
            },
            _ => AudioInfo::default(),
        };
        self.announce(idx, audio, out);
        Some(codec)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn pes_start(
        &mut self,
        sid: u8,
        pts: Option<u64>,
        dts: Option<u64>,
        payload_offset: u64,
        first: &[u8],
        payload_len_hint: usize,
        out: &mut Vec<Event>,
    ) {
        let Some(idx) = stream_index(sid) else {
            return;
        };
        let pts = pts.map(|t| self.unwrap_ts(t));
        let dts = dts.map(|t| self.unwrap_ts(t));
        let is_video = ps::is_video_stream_id(sid);
        if !is_video {
            self.complete_au(idx, out);
            let Some(codec) = self.resolve_codec(idx, first, out) else {
                // Its payload is dropped (no AU to attach to) and counted.
                out.push(Event::Dropped {
                    stream_id: sid,
                    bytes: payload_len_hint,
                    reason: DropReason::WaitingForPsm,
                });
                return;
            };
            let s = self.stream_mut(idx);
            s.au = Some(Au {
                pts,
                dts,
                clean: true,
                first_offset: payload_offset,
                codec: Some(codec),
                ..Default::default()
            });
            return;
        }
        let s = self.stream_mut(idx);
        // Some muxers (mpegpsmux) repeat the AU's PTS on every PES of a large frame.
        let repeated = pts.is_some()
            && (s
                .au
                .as_ref()
                .is_some_and(|au| au.pts == pts && au.dts == dts)
                || s.pending_ts
                    .is_some_and(|(p, d)| Some(p) == pts && d == dts));
        let pts = if repeated { None } else { pts };
        if !s.unaligned && pts.is_none() {
            return; // continuation of the current AU
        }
        let codec = if pts.is_some() {
            // Video is never held back (its codec is probed or guessed from the payload).
            let codec = match self.resolve_codec(idx, first, out) {
                Some(c) => c,
                None => self.stream_mut(idx).codec(),
            };
            // A key frame starts (a muxer writes its map just before): audio of an unknown
            // codec waits no longer.
            if probe::is_key_frame(codec, &first[..first.len().min(HEAD_MAX)]) {
                self.map_known = true;
            }
            codec
        } else {
            let s = self.stream_mut(idx);
            s.au.as_ref()
                .and_then(|au| au.codec)
                .unwrap_or_else(|| s.codec())
        };
        let mut starts = std::mem::take(&mut self.split_scratch);
        starts.clear();
        let s = self.stream_mut(idx);
        if !s.unaligned {
            probe::au_starts(
                codec,
                &first[..first.len().min(probe::PROBE_LIMIT)],
                &mut starts,
            );
            if starts.first() == Some(&0) || first.len() < MIN_PROBE.min(payload_len_hint) {
                s.splits.clear();
                s.splits.push((payload_offset, pts, dts, codec));
                self.split_scratch = starts;
                return;
            }
            // The muxer does not align PES to access units (ffmpeg): from now on scan every
            // payload of this stream for AU starts.
            s.unaligned = true;
            s.aligned_run = 0;
            s.in_vcl = true;
            s.tail_len = 0;
            starts.clear();
        }
        if let Some(p) = pts {
            s.pending_ts = Some((p, dts));
            s.pes_fresh = true;
        }
        self.split_scratch = starts;
    }

    /// Scan mode: finds AU starts in a chunk of payload and queues the splits.
    pub(super) fn scan_splits(
        &mut self,
        idx: usize,
        offset: u64,
        data: &[u8],
        out: &mut Vec<Event>,
    ) {
        let mut starts = std::mem::take(&mut self.split_scratch);
        starts.clear();
        let s = self.stream_mut(idx);
        let codec = s.codec();
        if s.au.is_none() {
            // Whatever came before is not part of any AU we keep. A provisional AU holds the
            // bytes from the PES with the PTS on, so that a start code cut by a chunk boundary
            // is still found; it is discarded if it ends up empty (or kept if it is a whole AU).
            s.in_vcl = true;
            if let Some((p, d)) = s.pending_ts {
                s.au = Some(Au {
                    pts: Some(p),
                    dts: d,
                    clean: true,
                    first_offset: offset,
                    codec: Some(codec),
                    ..Default::default()
                });
                s.tail_len = 0;
                s.tail_end = offset;
            }
        }
        // Start codes straddling the previous chunk and this one (or whose NAL header was cut).
        let contiguous =
            s.au.as_ref()
                .and_then(|au| au.ranges.last())
                .is_some_and(|r| r.offset + r.len as u64 == s.tail_end);
        let tail_len = if contiguous { s.tail_len } else { 0 };
        let tail_start = s.tail_end - tail_len as u64;
        let mut pre_split = None;
        if tail_len > 0 {
            let mut small = [0u8; 2 * TAIL];
            small[..tail_len].copy_from_slice(&s.tail[..tail_len]);
            let n = data.len().min(TAIL);
            small[tail_len..tail_len + n].copy_from_slice(&data[..n]);
            let from = s.scanned_to.saturating_sub(tail_start).min(tail_len as u64) as usize;
            if let Some(last) = probe::au_scan(
                codec,
                &small[..tail_len + n],
                &mut s.in_vcl,
                from..tail_len,
                &mut starts,
            ) {
                s.scanned_to = tail_start + last as u64 + 1;
            }
            if let Some(&st) = starts.first() {
                pre_split = Some(tail_len - st);
            }
            starts.clear();
        }
        if let Some(last) = probe::au_scan(codec, data, &mut s.in_vcl, 0..usize::MAX, &mut starts) {
            s.scanned_to = offset + last as u64 + 1;
        }
        if pre_split.is_none()
            && starts.first() == Some(&0)
            && data.starts_with(&[0, 0, 1])
            && tail_len > 0
            && s.tail[tail_len - 1] == 0
        {
            // The leading zero of a 4-byte start code sits in the previous chunk.
            pre_split = Some(1);
            starts.remove(0);
        }
        if std::mem::take(&mut s.pes_fresh) {
            // Trust the muxer to align PES to AUs after enough evidence: skip the scans then.
            if pre_split.is_none() && starts.first().is_some_and(|&st| st <= 1) {
                s.aligned_run += 1;
                if s.aligned_run >= ALIGNED_RUN {
                    s.unaligned = false;
                }
            } else {
                s.aligned_run = 0;
            }
        }
        let take_ts = |s: &mut Stream| match s.pending_ts.take() {
            Some((p, d)) => (Some(p), d),
            None => (None, None),
        };
        if let Some(k) = pre_split {
            let (p, d) = take_ts(s);
            self.split_before(idx, k, p, d, codec, out);
        }
        let s = self.stream_mut(idx);
        for &st in starts.iter() {
            let (p, d) = take_ts(s);
            s.splits.push((offset + st as u64, p, d, codec));
        }
        s.splits.reverse();
        self.split_scratch = starts;
    }

    /// Starts a new AU with the last `k` payload bytes already given to the current one.
    pub(super) fn split_before(
        &mut self,
        idx: usize,
        k: usize,
        pts: Option<u64>,
        dts: Option<u64>,
        codec: Codec,
        out: &mut Vec<Event>,
    ) {
        let s = self.stream_mut(idx);
        let head = s.tail[s.tail_len - k..s.tail_len].to_vec();
        let mut moved = Vec::new();
        if let Some(au) = s.au.as_mut()
            && !au.oversize
            && au.size >= k
        {
            let mut left = k;
            while left > 0 {
                let Some(r) = au.ranges.last_mut() else { break };
                let n = left.min(r.len);
                r.len -= n;
                moved.push(Range {
                    offset: r.offset + r.len as u64,
                    len: n,
                });
                if r.len == 0 {
                    au.ranges.pop();
                }
                left -= n;
            }
            au.size -= k - left;
            moved.reverse();
        }
        self.complete_au(idx, out);
        let size = moved.iter().map(|r| r.len).sum();
        let first_offset = moved.first().map_or(self.offset, |r| r.offset);
        let s = self.stream_mut(idx);
        s.au = Some(Au {
            ranges: moved,
            size,
            pts,
            dts,
            head: if size == k { head } else { Vec::new() },
            clean: true,
            first_offset,
            codec: Some(codec),
            ..Default::default()
        });
    }

    pub(super) fn payload(
        &mut self,
        sid: u8,
        mut offset: u64,
        mut data: &[u8],
        out: &mut Vec<Event>,
    ) {
        let Some(idx) = stream_index(sid) else {
            return;
        };
        if ps::is_video_stream_id(sid) && !data.is_empty() && self.stream_mut(idx).unaligned {
            self.scan_splits(idx, offset, data, out);
        }
        loop {
            let s = self.stream_mut(idx);
            let end = offset + data.len() as u64;
            match s.splits.last().copied() {
                Some((at, pts, dts, codec)) if at < end => {
                    let cut = (at.saturating_sub(offset)) as usize;
                    self.au_append(idx, offset, &data[..cut], out);
                    self.complete_au(idx, out);
                    let s = self.stream_mut(idx);
                    s.splits.pop();
                    s.au = Some(Au {
                        pts,
                        dts,
                        clean: true,
                        first_offset: at,
                        codec: Some(codec),
                        ..Default::default()
                    });
                    offset += cut as u64;
                    data = &data[cut..];
                }
                _ => {
                    self.au_append(idx, offset, data, out);
                    return;
                }
            }
        }
    }

    pub(super) fn au_append(&mut self, idx: usize, offset: u64, data: &[u8], out: &mut Vec<Event>) {
        if data.is_empty() {
            return;
        }
        let max = self.cfg.max_frame_size;
        let s = self.stream_mut(idx);
        if data.len() >= TAIL {
            s.tail.copy_from_slice(&data[data.len() - TAIL..]);
            s.tail_len = TAIL;
        } else {
            let keep = if s.tail_end == offset {
                (TAIL - data.len()).min(s.tail_len)
            } else {
                0
            };
            let mut t = [0u8; TAIL];
            t[..keep].copy_from_slice(&s.tail[s.tail_len - keep..s.tail_len]);
            t[keep..keep + data.len()].copy_from_slice(data);
            s.tail = t;
            s.tail_len = keep + data.len();
        }
        s.tail_end = offset + data.len() as u64;
        let Some(au) = s.au.as_mut() else {
            // No AU start seen (after loss or at stream start): nothing to attach to.
            s.stats.dropped_bytes += data.len() as u64;
            return;
        };
        if au.oversize || au.size + data.len() > max {
            au.oversize = true;
            au.dropped += au.size + data.len();
            au.size = 0;
            au.ranges.clear();
            let _ = out;
            return;
        }
        match au.ranges.last_mut() {
            Some(r) if r.offset + r.len as u64 == offset => r.len += data.len(),
            _ => au.ranges.push(Range {
                offset,
                len: data.len(),
            }),
        }
        au.size += data.len();
        if au.head.len() < HEAD_MAX {
            let n = (HEAD_MAX - au.head.len()).min(data.len());
            au.head.extend_from_slice(&data[..n]);
        }
    }

    pub(super) fn end_pes(&mut self, sid: u8, out: &mut Vec<Event>) {
        let Some(idx) = stream_index(sid) else {
            return;
        };
        if !ps::is_video_stream_id(sid) {
            self.complete_au(idx, out);
        }
        if let Some(s) = self.streams[idx].as_mut() {
            s.splits.clear();
        }
    }

    pub(super) fn drop_au(&mut self, idx: usize, reason: DropReason, out: &mut Vec<Event>) {
        let Some(s) = self.streams[idx].as_mut() else {
            return;
        };
        let Some(au) = s.au.take() else {
            return;
        };
        let bytes = au.size + au.dropped;
        s.stats.dropped_bytes += bytes as u64;
        if s.is_video() && reason != DropReason::WaitingForKeyFrame {
            s.need_key = true;
        }
        if bytes > 0 {
            out.push(Event::Dropped {
                stream_id: s.id,
                bytes,
                reason,
            });
        }
    }

    pub(super) fn complete_au(&mut self, idx: usize, out: &mut Vec<Event>) {
        let Some(s) = self.streams[idx].as_mut() else {
            return;
        };
        let Some(au) = s.au.as_ref() else {
            return;
        };
        if au.oversize {
            self.drop_au(idx, DropReason::TooLarge, out);
            return;
        }
        if !au.clean {
            self.drop_au(idx, DropReason::Partial, out);
            return;
        }
        if au.size == 0 {
            s.au = None;
            return;
        }
        let codec = au.codec.unwrap_or_else(|| s.codec());
        let key = probe::is_key_frame(codec, &au.head);
        if s.is_video() && s.need_key && !key {
            self.drop_au(idx, DropReason::WaitingForKeyFrame, out);
            return;
        }
        let Some(au) = s.au.take() else {
            return;
        };
        if key {
            s.need_key = false;
            // A muxer that writes no map: audio of an unknown codec waits no longer.
            if s.is_video() {
                self.map_known = true;
            }
        }
        s.stats.frames += 1;
        s.stats.bytes += au.size as u64;
        let discont = std::mem::take(&mut s.discont);
        out.push(Event::Frame(Frame {
            stream_id: s.id,
            codec,
            ranges: au.ranges,
            size: au.size,
            pts: au.pts,
            dts: au.dts,
            key,
            discont,
        }));
    }

    /// Completes video AUs the input has moved far past (a stream that stopped), so that the
    /// caller never has to keep more than `max_span` bytes of input.
    pub(super) fn flush_stalled(&mut self, out: &mut Vec<Event>) {
        let limit = self.cfg.max_span();
        for i in 0..NUM_STREAMS {
            let stalled = self.streams[i].as_ref().is_some_and(|s| {
                s.au.as_ref()
                    .is_some_and(|au| self.offset.saturating_sub(au.first_offset) > limit)
            });
            if stalled {
                self.complete_au(i, out);
            }
        }
    }
}
