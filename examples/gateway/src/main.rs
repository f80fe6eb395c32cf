//! The GB28181 → RTSP/HLS gateway.
//!
//! `gst-ipcam-gateway [--config gateway.toml] [--simulate N] [--hls true] [--record-dir DIR] ...`
//! (`--help` lists every option with its default; `--check-config` checks and exits). Ctrl-C
//! stops it cleanly (BYE to every camera, files finalized, exit 0); SIGHUP re-reads the
//! config file and flags and applies users and device passwords (as `POST /v1/config/reload`).
//! Exit status 2: a bad flag or config file; 1: the gateway could not start.
//!
//! Readers are `[[users]]` of the config file; `gst-ipcam-gateway --hash-password [--user NAME]`
//! reads a password (or token) on stdin and prints the `pass` and `digest_ha1` values to store.

use gst_ipcam_gateway::auth;
use gst_ipcam_gateway::config::{Config, LoadError, flags};
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::signals;

const NAME: &str = "gst-ipcam-gateway";

/// `--hash-password [--user NAME]`: the values of a `[[users]]` entry for the password on stdin.
fn hash_password(user: Option<&str>) -> Result<(), String> {
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
    let cli = flags::parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if cli.hash_password {
        if let Err(e) = hash_password(cli.user.as_deref()) {
            eprintln!("{NAME}: {e}");
            std::process::exit(2);
        }
        return;
    }
    let cfg = match Config::load(cli.config.as_deref(), &cli.settings) {
        Ok(c) => c,
        Err(LoadError::Flag(e)) => flags::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit(),
        Err(LoadError::File(e)) => {
            eprintln!("{NAME}: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        match cfg.check() {
            Ok(()) => {
                let from = cli.config.as_deref().map(|p| p.display().to_string());
                print!("{}", cfg.to_toml_redacted());
                println!(
                    "# {NAME}: configuration OK ({})",
                    from.as_deref().unwrap_or("defaults and flags")
                );
                return;
            }
            Err(e) => {
                eprintln!("{NAME}: {e}");
                std::process::exit(2);
            }
        }
    }
    let mut gw = match Gateway::start(cfg.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{NAME}: {e}");
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
    let (file, settings) = (cli.config.clone(), cli.settings.clone());
    gw.set_config_loader(Box::new(move || {
        Config::load(file.as_deref(), &settings).map_err(|e| e.to_string())
    }));
    signals::install();
    signals::install_hangup();
    signals::wait(|| {
        if signals::hangup_requested() {
            println!("[gateway] SIGHUP: reloading the configuration");
            if let Err(e) = gw.reload() {
                eprintln!("[gateway] reload: {e}");
            }
        }
        false
    });
    println!("[gateway] stopping");
    gw.stop();
    println!("[gateway] stopped");
}
