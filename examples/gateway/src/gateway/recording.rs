//! HLS/recording of a channel kept running for as long as the channel is mounted.

use super::*;

/// First and longest wait before HLS/recording start again after their session failed.
pub(super) const OUTPUTS_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub(super) const OUTPUTS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps a channel's HLS/recording running for as long as the channel (this mount of it,
/// `generation`) exists: starts them on the channel's ingest, and when that ingest fails
/// (camera gone, stream timeout) or the outputs fail, finalizes them and starts again after
/// a growing back-off. The channel's `outputs` is set only while they run.
pub(super) fn run_outputs(weak: Weak<Shared>, s: OutputSettings, generation: u64) {
    let channel = s.channel.clone();
    let mounted = |sh: &Shared| {
        !sh.stopping.load(Ordering::SeqCst)
            && lock(&sh.channels)
                .get(&channel)
                .is_some_and(|c| c.generation == generation)
    };
    let mut backoff = OUTPUTS_BACKOFF_MIN;
    // Held across a restart for new streams, so the session is not stopped in between.
    let mut held: Option<Arc<Ingest>> = None;
    let mut changed_at: Option<Instant> = None;
    'outputs: loop {
        let Some(sh) = weak.upgrade() else { return };
        if !mounted(&sh) {
            if let Some(i) = held.take() {
                i.release();
            }
            return;
        }
        let hooks = Hooks {
            shared: Arc::downgrade(&sh),
        };
        let started = hooks.ingest(&channel).and_then(|ingest| {
            ingest.hold();
            let r = ChannelOutputs::start(s.clone(), ingest.clone());
            ingest.release();
            r
        });
        if let Some(i) = held.take() {
            i.release();
        }
        match started {
            Ok(o) => {
                let watch = o.watch();
                let stored = {
                    let mut chans = lock(&sh.channels);
                    match chans.get_mut(&channel) {
                        Some(c)
                            if c.generation == generation
                                && !sh.stopping.load(Ordering::SeqCst) =>
                        {
                            c.outputs = Some(o);
                            None
                        }
                        _ => Some(o),
                    }
                };
                if let Some(o) = stored {
                    o.stop();
                    hooks.maybe_stop(&channel);
                    return;
                }
                backoff = OUTPUTS_BACKOFF_MIN;
                drop(sh);
                // Until they stop writing (woken when the ingest fails) or the channel goes
                // (seen within a second).
                loop {
                    watch.wait_broken(Duration::from_secs(1));
                    let Some(sh) = weak.upgrade() else { return };
                    let failed = {
                        let mut chans = lock(&sh.channels);
                        match chans.get_mut(&channel) {
                            Some(c) if c.generation == generation => match &c.outputs {
                                Some(o) if o.is_running() => None,
                                Some(_) => c.outputs.take(),
                                // Taken by stop() or unmount.
                                None => return,
                            },
                            _ => return,
                        }
                    };
                    if let Some(o) = failed {
                        // New codec or size: new files at once (at most once a second).
                        if o.watch().streams_changed()
                            && changed_at.is_none_or(|t| t.elapsed() >= OUTPUTS_BACKOFF_MIN)
                        {
                            eprintln!(
                                "[gateway] channel {channel}: the camera's streams changed; HLS/recording start new files"
                            );
                            changed_at = Some(Instant::now());
                            o.ingest().hold();
                            held = Some(o.ingest().clone());
                            o.stop();
                            continue 'outputs;
                        }
                        match o.watch().error() {
                            Some(e) => super::warn(&format!(
                                "channel {channel}: HLS/recording failed: {e}; restarting"
                            )),
                            None => eprintln!(
                                "[gateway] channel {channel}: HLS/recording stopped with the camera session; restarting"
                            ),
                        }
                        o.stop();
                        break;
                    }
                }
            }
            Err(e) => eprintln!("[gateway] channel {channel}: outputs: {e}"),
        }
        if let Some(sh) = weak.upgrade() {
            Hooks {
                shared: Arc::downgrade(&sh),
            }
            .maybe_stop(&channel);
        }
        // Back off, waking early if the channel goes.
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            match weak.upgrade() {
                Some(sh) if mounted(&sh) => {}
                _ => return,
            }
        }
        backoff = (backoff * 2).min(OUTPUTS_BACKOFF_MAX);
    }
}
