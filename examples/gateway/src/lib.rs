//! gst-ipcam's runnable programs, shared code: the GB28181 → RTSP/HLS gateway ([`gateway`]),
//! simulated cameras ([`sim`]), settings ([`config`]), metrics ([`metrics`]), a small HTTP
//! server ([`http`]) and the HLS/recording outputs ([`outputs`]).

pub mod api;
pub mod auth;
pub mod cascade;
pub mod cli;
pub mod config;
pub mod direct;
pub mod factory;
pub mod fuzz;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod malloc;
pub mod metrics;
pub mod multicast;
pub mod onvif;
pub mod outputs;
pub mod paths;
pub mod pull;
pub mod push;
pub mod rtmp;
pub mod rtsp_auth;
pub mod sim;
pub mod store;
pub mod web;
pub mod webrtc;

/// Ctrl-C / SIGTERM (stop) and SIGHUP (reload), as flags the programs poll
/// (async-signal-safe: the handlers only store).
pub mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};

    static STOP: AtomicBool = AtomicBool::new(false);
    static HANGUP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }

    extern "C" fn on_hangup(_: libc::c_int) {
        HANGUP.store(true, Ordering::SeqCst);
    }

    /// Installs the handler for SIGHUP (see [`hangup_requested`]).
    pub fn install_hangup() {
        let handler = on_hangup as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGHUP, handler);
        }
    }

    /// Whether a SIGHUP came since the last call.
    pub fn hangup_requested() -> bool {
        HANGUP.swap(false, Ordering::SeqCst)
    }

    /// Installs the handler for SIGINT and SIGTERM.
    pub fn install() {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }

    pub fn stop_requested() -> bool {
        STOP.load(Ordering::SeqCst)
    }

    /// Sleeps until a signal arrives or `f` returns true.
    pub fn wait(mut f: impl FnMut() -> bool) {
        while !stop_requested() && !f() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
