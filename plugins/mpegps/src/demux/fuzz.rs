//! Entry point shared by the `ps_demux` fuzz target and the corpus replay test.

use super::{Config, Demuxer, Event};

/// The fuzz / corpus-replay entry point: feeds `data` through a demuxer in chunks whose sizes
/// come from the data itself, with an occasional discontinuity and frame-aligned flush, and
/// checks that every emitted frame range lies inside what was pushed.
pub fn fuzz_one(data: &[u8]) {
    let mut d = Demuxer::new(Config {
        max_frame_size: 64 * 1024,
    });
    let mut ev = Vec::new();
    let mut pos = 0;
    let mut step = 1 + data.first().copied().unwrap_or(0) as usize * 7;
    let mut i = 0u32;
    while pos < data.len() {
        let end = (pos + step).min(data.len());
        d.push(&data[pos..end], &mut ev);
        pos = end;
        i += 1;
        let b = data.get(pos).copied().unwrap_or(0);
        if i.is_multiple_of(13) && b & 1 == 1 {
            d.discont(&mut ev);
        }
        if i.is_multiple_of(7) {
            d.end_of_unit(&mut ev);
        }
        step = 1 + b as usize * 5;
        check_events(&ev, d.offset());
        ev.clear();
    }
    d.finish(&mut ev);
    check_events(&ev, d.offset());
    let _ = d.stats();
}

fn check_events(ev: &[Event], end: u64) {
    for e in ev {
        if let Event::Frame(f) = e {
            let mut size = 0;
            for r in &f.ranges {
                assert!(r.offset + r.len as u64 <= end, "range past the input");
                size += r.len;
            }
            assert_eq!(size, f.size);
        }
    }
}
