//! Helpers shared by the examples' integration tests (each test file says `mod common;`).
#![allow(dead_code, unused_imports)]

pub use gst_ipcam_testutil::programs::{
    ChildGuard, example, ffprobe_frames, frames_of, free_port, profile_dir, scratch, serial,
};
