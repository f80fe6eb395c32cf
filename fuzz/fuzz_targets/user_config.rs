#![no_main]
// Gateway config files with `[[users]]` tables: parsed with serde, then turned into a user
// table (hashes, CIDR ranges, path regexes checked and bounded). Errors, never a panic.
use gst_ipcam_gateway::auth::{Action, REALM, Users};
use gst_ipcam_gateway::config::Config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = Config::from_toml(&text)
        && let Ok(users) = Users::from_config(&cfg.users, REALM)
    {
        let _ = users.without_digest();
        for u in &cfg.users {
            if let Ok(id) =
                users.authenticate_basic(&u.user, "x", std::net::IpAddr::from([127, 0, 0, 1]))
            {
                let _ = id.allows(Action::Read, "34020000001320000001");
            }
        }
    }
});
