//! Throughput of the GStreamer-free core alone over a dump, read in `blocksize` chunks:
//! `cargo run --release --example core_throughput -- <dump> [blocksize]`.
//! Used by benches/rtspinterleaved.sh to separate the parser's cost from GStreamer's
//! per-buffer cost.

use std::io::Read;
use std::time::Instant;

use gstrtspinterleaved::interleaved::{Demuxer, Output};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: core_throughput <dump> [blocksize]");
    let blocksize: usize = args.next().and_then(|b| b.parse().ok()).unwrap_or(65536);
    let mut file = std::fs::File::open(&path).expect("open dump");
    let mut buf = vec![0u8; blocksize];
    let mut demux = Demuxer::default();
    let mut out = Vec::new();
    let (mut bytes, mut packets) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        out.clear();
        demux.push(&buf[..n], &mut out);
        packets += out
            .iter()
            .filter(|o| matches!(o, Output::Packet { .. }))
            .count() as u64;
    }
    demux.finish(&mut out);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "core only, blocksize {blocksize}: {:.1} MB/s ({secs:.2} s, {packets} packets, {:.0} ns/packet)",
        bytes as f64 / secs / 1048576.0,
        secs * 1e9 / packets.max(1) as f64
    );
}
