//! One upper platform's settings: a `[[cascade]]` table of the config file (file only, like
//! `[[users]]`). Checked when read: IDs 20 digits, transport `udp`/`tcp`, bounded numbers,
//! shared channel IDs of a sane shape (the gateway's ID policy checks them again at start).
//! The password is never serialized (`<hidden>`), so `--check-config` cannot print it.

use crate::config::file::{bounded, gb_id, sip_transport};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Upper platforms at most.
pub const MAX_UPPERS: usize = 64;
/// Channel IDs listed per upper platform at most.
pub const MAX_SHARED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeConfig {
    /// The upper platform's 20-digit ID.
    #[serde(deserialize_with = "gb_id")]
    pub server_id: String,
    /// Its SIP address (IP or host name) and port.
    pub address: String,
    pub port: u16,
    /// `udp` or `tcp`.
    #[serde(deserialize_with = "sip_transport")]
    pub transport: String,
    /// Its SIP domain (empty: the first 10 digits of `server_id`).
    pub domain: String,
    /// The gateway's own 20-digit ID toward it (type 200: a platform).
    #[serde(deserialize_with = "gb_id")]
    pub device_id: String,
    /// Digest password of the registration (never logged, never shown).
    #[serde(serialize_with = "hidden")]
    pub password: String,
    /// Name in its device list.
    pub name: String,
    #[serde(deserialize_with = "bounded::<_, _, 60, 86_400>")]
    pub register_expires_s: u32,
    #[serde(deserialize_with = "bounded::<_, _, 1, 3600>")]
    pub keepalive_interval_s: u32,
    /// First retry after a failed registration (doubling up to 32x).
    #[serde(deserialize_with = "bounded::<_, _, 1, 3600>")]
    pub register_retry_s: u32,
    /// `["all"]` (every mounted channel) or channel IDs.
    #[serde(deserialize_with = "shared_channels")]
    pub channels: Vec<String>,
    /// Live sessions it may open at once; the next INVITE gets 486.
    #[serde(deserialize_with = "bounded::<_, _, 1, 1024>")]
    pub max_sessions: usize,
    /// Catalog items per MESSAGE (wvp-GB28181-pro's "catalog group", default 1).
    #[serde(deserialize_with = "bounded::<_, _, 1, 100>")]
    pub catalog_page: usize,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig {
            server_id: "34020000002000000001".into(),
            address: "127.0.0.1".into(),
            port: 5060,
            transport: "udp".into(),
            domain: String::new(),
            device_id: "34020000002000000002".into(),
            password: String::new(),
            name: "gst-ipcam gateway".into(),
            register_expires_s: 3600,
            keepalive_interval_s: 60,
            register_retry_s: 5,
            channels: vec!["all".into()],
            max_sessions: 16,
            catalog_page: 1,
        }
    }
}

impl CascadeConfig {
    /// `domain`, or the first 10 digits of the upper platform's ID.
    pub fn sip_domain(&self) -> String {
        if self.domain.is_empty() {
            self.server_id.chars().take(10).collect()
        } else {
            self.domain.clone()
        }
    }

    /// Whether every mounted channel is shared.
    pub fn shares_all(&self) -> bool {
        self.channels.iter().any(|c| c == "all")
    }
}

fn hidden<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { "" } else { "<hidden>" })
}

fn shared_channels<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.len() > MAX_SHARED {
        return Err(D::Error::custom(format!("more than {MAX_SHARED} channels")));
    }
    for c in &v {
        if c != "all" {
            gstgb28181::core::id::check_shape(c).map_err(|e| {
                D::Error::custom(format!(
                    "channel {:?}: {e}",
                    gstgb28181::core::id::printable(c)
                ))
            })?;
        }
    }
    Ok(v)
}

/// `[[cascade]]` tables, at most [`MAX_UPPERS`].
pub fn uppers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CascadeConfig>, D::Error> {
    let v = Vec::<CascadeConfig>::deserialize(d)?;
    if v.len() > MAX_UPPERS {
        return Err(D::Error::custom(format!(
            "more than {MAX_UPPERS} upper platforms"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn tables_are_read_and_checked() {
        let c = Config::from_toml(
            "[[cascade]]\nserver_id = \"44010000002000000001\"\naddress = \"10.0.0.9\"\n\
             device_id = \"34020000002000000009\"\npassword = \"pw\"\nchannels = [\"34020000001310000001\"]\n",
        )
        .unwrap();
        assert_eq!(c.cascade.len(), 1);
        let u = &c.cascade[0];
        assert_eq!(u.sip_domain(), "4401000000");
        assert!(!u.shares_all());
        assert_eq!(u.port, 5060);
        let t = c.to_toml_redacted();
        assert!(!t.contains("\"pw\""), "{t}");
        for bad in [
            "[[cascade]]\nserver_id = \"123\"\n",
            "[[cascade]]\ndevice_id = \"x\"\n",
            "[[cascade]]\ntransport = \"sctp\"\n",
            "[[cascade]]\nchannels = [\"../x\"]\n",
            "[[cascade]]\nmax_sessions = 0\n",
            "[[cascade]]\nbogus = 1\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        assert!(Config::default().cascade.is_empty());
    }
}
