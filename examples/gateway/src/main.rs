//! The GB28181 → RTSP/HLS gateway.
//!
//! `gst-ipcam-gateway [--simulate N] [--hls true] [--record-dir DIR]
//! [--config gateway.toml] ...` (`--help` lists every option). Ctrl-C stops it cleanly (BYE to
//! every camera, files finalized, exit 0).
//!
//! Readers are `[[users]]` of the config file; `gateway --hash-password [--user NAME]` reads a
//! password (or token) on stdin and prints the `pass` and `digest_ha1` values to store.

use gst_ipcam_gateway::auth;
use gst_ipcam_gateway::config::{Config, USAGE};
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::signals;

/// `--hash-password [--user NAME]`: the values of a `[[users]]` entry for the password on stdin.
fn hash_password(args: &[String]) -> Result<(), String> {
    let user = match args {
        [] => None,
        [flag, name] if flag == "--user" => Some(name.as_str()),
        _ => return Err("usage: gateway --hash-password [--user NAME] < password".into()),
    };
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("stdin: {e}"))?;
    let pass = line.trim_end_matches(['\r', '\n']);
    if pass.is_empty() {
        return Err("an empty password on stdin".into());
    }
    if let Some(u) = user {
        println!("user = \"{u}\"");
    }
    println!("pass = \"{}\"", auth::hash_password(pass)?);
    if let Some(u) = user {
        println!(
            "digest_ha1 = \"{}\"",
            auth::digest_ha1(u, auth::REALM, pass)
        );
    }
    Ok(())
}

fn main() {
    gst_ipcam_gateway::malloc::limit_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "gateway: GB28181 cameras to RTSP (and HLS, MP4 recording)\n{USAGE}\n  --config FILE          TOML file with the same keys\n  --hash-password [--user NAME]  print the [[users]] values for the password on stdin"
        );
        return;
    }
    if args.first().is_some_and(|a| a == "--hash-password") {
        if let Err(e) = hash_password(&args[1..]) {
            eprintln!("gateway: {e}");
            std::process::exit(2);
        }
        return;
    }
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut gw = match Gateway::start(cfg.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gateway: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "[gateway] SIP {}:{} ({}), server id {}, RTSP port {}, metrics http://{}:{}/metrics, {} user(s)",
        cfg.sip_address,
        gw.endpoint().local_addr().port(),
        cfg.sip_transport,
        cfg.server_id,
        gw.rtsp_port(),
        cfg.metrics_address,
        gw.metrics_addr().map(|a| a.port()).unwrap_or(0),
        gw.users().len()
    );
    for i in 0..cfg.simulate {
        // The gateway stores only password hashes: the URL carries the user name to fill in.
        let url = gw.url(&cfg.sim_device_id(i));
        let url = match cfg.users.iter().find(|u| u.user != "any") {
            Some(u) => url.replacen("rtsp://", &format!("rtsp://{}:<password>@", u.user), 1),
            None => url,
        };
        println!("[gateway] simulated camera: open {url}");
    }
    signals::install();
    signals::wait(|| false);
    println!("[gateway] stopping");
    gw.stop();
    println!("[gateway] stopped");
}
