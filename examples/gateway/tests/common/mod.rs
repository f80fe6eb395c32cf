//! Helpers shared by the gateway's integration tests (each test file says `mod common;`).
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

pub use gst_ipcam_testutil::programs::{
    ChildGuard, ffprobe_frames, frames_of, free_port, mp4_files, profile_dir, scratch, serial,
};

/// The reader most tests play as (also reads HLS and the metrics).
pub const READER: (&str, &str) = ("reader", "reader-pw");

/// The gateway binary this package builds for its tests.
pub fn gateway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gst-ipcam-gateway"))
}
