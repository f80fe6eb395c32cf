//! `GET /v1/config`: the running configuration without secrets (no password hashes, no
//! tokens, no Digest HA1, no device passwords: only whether they are set).
//! `POST /v1/config/reload`: re-reads the file (and flags) the gateway started with and
//! applies users and device passwords; the other changed settings are listed as needing a
//! restart.

use super::{Api, ApiError, ApiResult, ErrorBody, blocking};
use crate::config::Config;
use crate::gateway::{ReloadError, ReloadReport};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub user: String,
    pub has_password: bool,
    pub has_digest: bool,
    pub tokens: usize,
    pub ips: Vec<String>,
    /// `action path` pairs (path empty: every path).
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigView {
    pub sip_address: String,
    pub sip_port: u16,
    pub sip_transport: String,
    pub server_id: String,
    pub media_transport: String,
    pub listen_address: String,
    pub public_host: String,
    pub rtsp_port: u16,
    pub hls: bool,
    pub hls_port: u16,
    pub record_dir: Option<String>,
    pub record_segment_s: u64,
    pub id_pattern: String,
    pub max_devices: usize,
    pub max_channels_per_device: usize,
    /// Whether a default device password is set (never the password).
    pub default_device_password: bool,
    /// Devices with their own password (IDs only).
    pub device_passwords: Vec<String>,
    pub users: Vec<UserView>,
    /// Pulled cameras: `name` and `source` with the password masked.
    pub paths: Vec<PulledPathView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PulledPathView {
    pub name: String,
    /// The URL with `***` for the password.
    pub source: String,
    pub source_protocol: String,
    pub source_on_demand: bool,
}

impl From<&Config> for ConfigView {
    fn from(c: &Config) -> Self {
        let mut device_passwords: Vec<String> = c.device_password_map().into_keys().collect();
        device_passwords.sort();
        ConfigView {
            sip_address: c.sip_address.clone(),
            sip_port: c.sip_port,
            sip_transport: c.sip_transport.clone(),
            server_id: c.server_id.clone(),
            media_transport: c.media_transport.clone(),
            listen_address: c.listen_address.clone(),
            public_host: c.public_host.clone(),
            rtsp_port: c.rtsp_port,
            hls: c.hls,
            hls_port: c.hls_port,
            record_dir: c.record_dir.as_ref().map(|d| d.display().to_string()),
            record_segment_s: c.record_segment_s,
            id_pattern: c.id_pattern.clone(),
            max_devices: c.max_devices,
            max_channels_per_device: c.max_channels_per_device,
            default_device_password: !c.password.is_empty(),
            device_passwords,
            users: c
                .users
                .iter()
                .map(|u| UserView {
                    user: u.user.clone(),
                    has_password: !u.pass.is_empty(),
                    has_digest: !u.digest_ha1.is_empty(),
                    tokens: u.tokens.len(),
                    ips: u.ips.clone(),
                    permissions: u
                        .permissions
                        .iter()
                        .map(|p| format!("{:?} {}", p.action, p.path).to_ascii_lowercase())
                        .collect(),
                })
                .collect(),
            paths: c
                .paths
                .iter()
                .map(|p| PulledPathView {
                    name: p.name.clone(),
                    source: crate::pull::masked(&p.source),
                    source_protocol: p.source_protocol.clone(),
                    source_on_demand: p.source_on_demand,
                })
                .collect(),
        }
    }
}

/// The running configuration, secrets left out.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, body = ConfigView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn get_config(State(api): State<Api>) -> ApiResult<ConfigView> {
    Ok(Json(ConfigView::from(&api.control.config()?)))
}

/// Re-reads the configuration: a valid one swaps the users (new RTSP/HTTP requests at once;
/// sessions already playing go on) and the device passwords; an invalid one changes nothing.
#[utoipa::path(post, path = "/v1/config/reload", tag = "config",
    responses((status = 200, body = ReloadReport,
            description = "Applied; `restart_needed` lists changed settings a restart applies"),
        (status = 400, body = ErrorBody, description = "Invalid file or flags: nothing changed"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Started without a config file")))]
pub async fn reload_config(State(api): State<Api>) -> ApiResult<ReloadReport> {
    let control = api.control.clone();
    blocking(move || {
        control.reload().map_err(|e| match e {
            ReloadError::NoSource => ApiError::conflict(e.to_string()),
            ReloadError::Invalid(_) => {
                eprintln!("[gateway] {e}");
                ApiError::bad_request(e.to_string())
            }
            ReloadError::Gone => ApiError::gone(),
        })
    })
    .await
    .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Action, UserConfig};

    #[test]
    fn no_secret_in_the_view() {
        let c = Config {
            password: "dev-secret-1".into(),
            device_passwords: "34020000001320000001=dev-secret-2".into(),
            users: vec![UserConfig {
                tokens: vec!["sha256:aa:tok-secret".into()],
                ..UserConfig::with_password("u", "user-secret", &[(Action::Api, "")]).unwrap()
            }],
            paths: vec![crate::pull::PathConfig {
                name: "garage".into(),
                source: "rtsp://cam:cam-secret@10.0.0.5/live".into(),
                ..Default::default()
            }],
            ..Config::default()
        };
        let json = serde_json::to_string(&ConfigView::from(&c)).unwrap();
        assert!(json.contains("rtsp://cam:***@10.0.0.5/live"), "{json}");
        for secret in [
            "cam-secret",
            "dev-secret",
            "user-secret",
            "tok-secret",
            "sha256",
            &c.users[0].pass,
            &c.users[0].digest_ha1,
        ] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert!(json.contains("\"34020000001320000001\""));
        assert!(json.contains("\"api \""));
    }
}
