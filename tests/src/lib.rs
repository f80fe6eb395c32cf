//! Helpers of the integration tests: plugin registration and paths to test data, plus
//! everything of the shared `gst-ipcam-testutil` (waits, pipelines, seeded impairment).

use std::path::PathBuf;

pub use gst_ipcam_testutil::*;

/// Registers every gst-ipcam plugin statically, once per process.
pub fn init() {
    init_with(|| {
        gstmpegps::plugin_register_static().expect("register mpegps");
        gstrtspinterleaved::plugin_register_static().expect("register rtspinterleaved");
        gstrtcpstats::plugin_register_static().expect("register rtcpstats");
    });
}

/// The project root (the workspace directory).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent")
        .to_path_buf()
}

/// `../shared/testdata` next to the project, as the brief lays it out.
pub fn shared_testdata() -> PathBuf {
    project_root().join("../shared/testdata")
}

/// A fresh scratch directory under the target dir for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = project_root().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
