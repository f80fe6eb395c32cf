#![no_main]
// `Authorization` header values as RTSP/HTTP clients send them: parsed, then authenticated
// against a small user table (Basic, Bearer, Digest). Never a panic, whatever the bytes.
use gst_ipcam_gateway::auth::{
    Action, Attempt, Authorization, Protocol, REALM, UserConfig, Users,
};
use std::sync::LazyLock;

static USERS: LazyLock<Users> = LazyLock::new(|| {
    let mut tok = UserConfig::with_password("svc", "pw", &[(Action::Metrics, "")]).unwrap();
    tok.tokens = vec![gst_ipcam_gateway::auth::hash_sha256("token").unwrap()];
    Users::from_config(
        &[
            UserConfig::with_password("demo", "pw", &[(Action::Read, "~^34")]).unwrap(),
            tok,
        ],
        REALM,
    )
    .unwrap()
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    if let Ok(a) = Authorization::parse(&value) {
        let _ = a.user();
    }
    let attempt = Attempt {
        protocol: Protocol::Rtsp,
        method: "DESCRIBE",
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    if let Ok(id) = USERS.authenticate(Some(&value), &attempt) {
        let _ = id.allows(Action::Read, &value);
    }
});
