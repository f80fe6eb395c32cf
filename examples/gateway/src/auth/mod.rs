//! Users and permissions of the gateway's readers and publishers (RTSP and HTTP), modelled on
//! MediaMTX's `authInternalUsers`: a user has a hashed password ([`hash`]), optional hashed
//! bearer tokens, an optional Digest HA1, optional source IP ranges, and permissions
//! (action + path pattern). [`Users`] authenticates `Authorization` header values
//! ([`header`]) with a bounded cache of successful verifications and the project's one
//! failed-attempt limiter per source IP. GStreamer-free; the RTSP glue is `rtsp_auth`.
//!
//! The API used by the RTSP and HTTP servers:
//! - [`Users::from_config`] builds the table from the config's `[[users]]`;
//! - [`Users::authenticate`] (header value or none, protocol, method, source IP) gives an
//!   [`Identity`] or an [`AuthError`]; [`Users::authenticate_basic`] and
//!   [`Users::authenticate_bearer`] are the same for already split credentials;
//! - [`Identity::allows`] (an [`Action`] on a path) decides 403;
//! - [`Users::basic_challenge`] / [`Users::digest_challenge`] are the `WWW-Authenticate`
//!   values of a 401.

/// The realm of RTSP/HTTP challenges; `digest_ha1` values are made with it.
pub const REALM: &str = "gst-ipcam";

pub mod hash;
pub mod header;
mod users;

pub use hash::{Secret, digest_ha1, hash_password, hash_sha256};
pub use header::{Authorization, HeaderError, basic_value};
pub use users::{
    Action, Attempt, AuthError, CACHE_MAX, CACHE_TTL_MS, Identity, MAX_USERS, PermissionConfig,
    Protocol, UserConfig, Users,
};
