//! Entry points shared by the cargo-fuzz targets (fuzz/fuzz_targets/{sip,sdp,manscdp,gb28181_media}.rs) and
//! the corpus-replay test: each runs one input through everything that parses untrusted bytes
//! and checks a few properties (no panic is the main one).

use super::{client, digest, manscdp, mansrtsp, registrar, sdp, sip, subject};

/// SIP: datagram parse, structured headers, serialize → re-parse, stream framing, and the
/// registrar on whatever parses.
pub fn sip(data: &[u8]) {
    if let Ok(m) = sip::Message::parse(data) {
        let _ = (
            m.via(),
            m.from(),
            m.to(),
            m.contact(),
            m.cseq(),
            m.expires(),
        );
        if let Some(c) = m.from().and_then(|f| f.sip_uri()) {
            let _ = c.to_string();
        }
        // IP hosts (IPv6 bracketed when written) read back the same.
        for u in [m.contact(), m.to()].into_iter().flatten() {
            if let Some(u) = u.sip_uri()
                && u.host.parse::<std::net::IpAddr>().is_ok()
            {
                assert_eq!(sip::SipUri::parse(&u.to_string()), Some(u));
            }
        }
        for v in m.headers_named("authorization") {
            if let Some(c) = digest::Credentials::parse(v) {
                let _ = digest::verify_response(&c, "REGISTER", "12345678");
                let _ = c.nc_value();
            }
        }
        if let Some(v) = m.header("www-authenticate") {
            let _ = digest::Challenge::parse(v);
        }
        if let Some(s) = m.header("subject") {
            let _ = subject::Subject::parse(s);
        }
        let bytes = m.to_bytes();
        let again = sip::Message::parse(&bytes);
        if std::str::from_utf8(data).is_ok() && bytes.len() < sip::MAX_MESSAGE_SIZE / 2 {
            let again = again.expect("re-parse of our own serialization");
            assert_eq!(again.start, m.start);
            assert_eq!(again.body, m.body);
        }
        if m.method() == Some("REGISTER") {
            let mut r = registrar::Registrar::new(registrar::RegistrarConfig {
                accept_foreign_nonces: true,
                ..Default::default()
            });
            let _ = r
                .handle_register(&m, "127.0.0.1:5060", 1_000_000)
                .response
                .to_bytes();
            let _ = r.poll(10_000_000_000);
        }
        if m.status().is_some() {
            // Whatever response arrives, the device side must cope.
            let mut c = client::RegisterClient::new(client::RegisterClientConfig::default());
            let _ = c.start(0);
            let _ = c.on_response(&m, 10);
            let _ = c.poll(40_000);
        }
        let _ = mansrtsp::Request::parse(&m.body);
        let _ = sip::Message::response_to(&m, 200, "OK", Some("1")).to_bytes();
    }
    let mut framer = sip::StreamFramer::new();
    for chunk in data.chunks(97) {
        for m in framer.push(chunk).into_iter().flatten() {
            let _ = m.to_bytes();
        }
        assert!(framer.buffered() <= sip::MAX_MESSAGE_SIZE + 97);
    }
}

/// SDP: offer/answer parse, and an answer built from whatever parsed.
pub fn sdp(data: &[u8]) {
    if let Ok(d) = sdp::parse(data) {
        let _ = (d.transport(), d.ps_payload_type(), d.media_addr());
        let answer =
            sdp::build_answer(&d, "34020000001320000001", "127.0.0.1", 15060, "0200000001");
        let _ = sdp::parse(answer.as_bytes());
        let v6 = sdp::build_answer(&d, "34020000001320000001", "::1", 15060, "0200000001");
        if let Ok(a) = sdp::parse(v6.as_bytes()) {
            assert_eq!(a.media_addr(), Some("[::1]:15060".parse().unwrap()));
        }
    }
}

/// MANSCDP: body decoding, typed parse, list merging.
pub fn manscdp(data: &[u8]) {
    let _ = manscdp::decode_body(data);
    match manscdp::Manscdp::parse(data) {
        Ok(manscdp::Manscdp::Catalog(list)) => {
            let mut m = manscdp::ListMerger::new(1000);
            let _ = m.add(list, 0);
            let _ = m.expire(5000);
        }
        Ok(manscdp::Manscdp::RecordInfo(list)) => {
            let _ = manscdp::build_record_info_response(
                list.sn,
                list.sum_num,
                &list.device_id,
                &list.items,
            );
        }
        _ => {}
    }
}

/// Media over TCP: RFC 4571 / `$` deframing (seed corpus: generated streams around the first
/// 600 PS bytes of shared/testdata/ps/hikvision-g711a-first-ps-bytes.bin, from the SRS project's
/// unit tests, MIT licence) fed in uneven chunks (chunk sizes taken from the
/// input), the PS frame classifiers used by the sink's GOP cache, the playback retimer, PS
/// talk audio and the sender lock.
pub fn media(data: &[u8]) {
    use super::media;
    let mut d = media::TcpDeframer::new();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut total = 0;
    for chunk in data.chunks(step) {
        for p in d.push(chunk) {
            assert!(p.len() >= 12 && p.len() <= media::MAX_RTP_PACKET);
            assert_eq!(p[0] >> 6, 2);
            total += p.len();
            assert!(media::frame_rfc4571(&p).is_some());
        }
        assert!(d.buffered() <= media::MAX_STREAM_BUFFER);
    }
    assert!(total <= data.len());
    let _ = (
        media::is_key_frame(data),
        media::has_psm(data),
        media::is_header_only(data),
    );
    // The playback retimer rewrites timestamps in place, within the frame.
    let mut frame = data.to_vec();
    let mut scaler = super::retime::Scaler::playback();
    scaler.frame(super::retime::frame_timestamp(&frame), 1_000_000_000);
    super::retime::retime_ps(&mut frame, |ts| scaler.map_ticks(ts));
    assert_eq!(frame.len(), data.len());
    let mut reorder = media::ReorderBuffer::new(8);
    let mut released = 0usize;
    let mut pushed = 0usize;
    for w in data.chunks(2) {
        let seq = u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)]);
        pushed += 1;
        released += reorder.push(seq, seq).len();
        assert!(reorder.held() <= 8);
    }
    released += reorder.flush().len();
    // Duplicates of held packets are dropped; nothing else is.
    assert!(released <= pushed);
    // PS talk audio: payloads cut where the input says; what comes out is bounded by it, and
    // the input kept stays bounded.
    let mut ps = super::talk::PsAudio::default();
    let mut heard = 0usize;
    for chunk in data.chunks(step.max(16)) {
        ps.push(chunk, |_, b| heard += b.len());
        assert!(ps.kept() <= data.len());
    }
    assert!(heard <= data.len());
    let mut lock = media::SenderLock::new(data.get(1).map(|b| u32::from(*b)));
    for (i, w) in data.chunks(5).enumerate() {
        let port = u16::from(w.first().copied().unwrap_or(0) % 3);
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + port));
        let _ = lock.accept(from, u32::from(w.get(1).copied().unwrap_or(0) % 4));
        if i > 1000 {
            break;
        }
    }
}
