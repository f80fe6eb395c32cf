//! The config file: TOML read by serde into [`Config`], unknown keys refused, and the checks of
//! the settings that have bounds or a closed set of values (used by `Config`'s `Deserialize`,
//! so a flag, laid over the file through the same `Deserialize`, gets the same checks).

use super::Config;
use crate::auth::{MAX_USERS, UserConfig};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A config file larger than this is refused (it is a short hand-written file).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads a TOML document; errors are `LINE:COL: message` (1-based) where the document says.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| located(text, &e))
    }
}

/// The file's text, bounded.
pub fn read(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

/// `LINE:COL: message` of a toml error.
fn located(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("{line}:{col}: {msg}")
        }
        None => msg.to_string(),
    }
}

/// 1-based line and column (in characters) of byte `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// An integer within `LO..=HI`.
pub fn bounded<'de, D, T, const LO: u64, const HI: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let v = u64::deserialize(d)?;
    if !(LO..=HI).contains(&v) {
        return Err(D::Error::custom(format!("{v} is not within {LO} to {HI}")));
    }
    T::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large")))
}

fn one_of<'de, D: Deserializer<'de>>(d: D, allowed: &[&str]) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(D::Error::custom(format!(
            "`{}` is not one of {}",
            v.escape_debug(),
            allowed.join(", ")
        )))
    }
}

pub fn sip_transport<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    one_of(d, &["udp", "tcp"])
}

pub fn media_transport<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    one_of(d, &["udp", "tcp-passive", "tcp-active"])
}

/// Empty, or an IPv4/IPv6 address.
pub fn opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if v.is_empty() || v.parse::<std::net::IpAddr>().is_ok() {
        Ok(v)
    } else {
        Err(D::Error::custom(format!("{v:?} is not an IP address")))
    }
}

/// Empty, or a multicast range in CIDR form ([`crate::multicast::range_bounds`]).
pub fn multicast_range<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if !v.is_empty() {
        crate::multicast::range_bounds(&v).map_err(D::Error::custom)?;
    }
    Ok(v)
}

/// Empty, or `min-max` with 0 < min <= max <= 65535.
pub fn port_range<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    let ok = v.is_empty()
        || v.split_once('-').is_some_and(|(a, b)| {
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a > 0 && a <= b)
        });
    if ok {
        Ok(v)
    } else {
        Err(D::Error::custom(format!(
            "{v:?} is not a port range min-max"
        )))
    }
}

pub fn sim_codec<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    one_of(d, &["h264", "h265"])
}

/// A GB/T 28181 ID (20 digits).
pub fn gb_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    crate::cli::gb_id(&String::deserialize(d)?).map_err(D::Error::custom)
}

/// A regular expression accepted by `gstgb28181::core::id::IdPolicy`.
pub fn id_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    gstgb28181::core::id::IdPolicy::with_pattern(&v).map_err(D::Error::custom)?;
    Ok(v)
}

/// A path; empty: none.
pub fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let v = PathBuf::deserialize(d)?;
    Ok((!v.as_os_str().is_empty()).then_some(v))
}

pub fn ser_opt_path<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.as_deref().unwrap_or(Path::new("")).to_string_lossy())
}

/// `[[users]]` tables, at most [`MAX_USERS`]; their contents are checked by
/// `auth::Users::from_config`.
pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UserConfig>, D::Error> {
    let v = Vec::<UserConfig>::deserialize(d)?;
    if v.len() > MAX_USERS {
        return Err(D::Error::custom(format!("more than {MAX_USERS} users")));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_column() {
        let e = Config::from_toml("sip_port = 5070\n\n  bogus = 1\n").unwrap_err();
        assert!(e.starts_with("3:3: unknown field `bogus`"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
        let e = Config::from_toml("sip_port = 70000\n").unwrap_err();
        assert!(e.starts_with("1:12: "), "{e}");
        let e = Config::from_toml("simulate = 3\nmax_devices = 0\n").unwrap_err();
        assert_eq!(e, "2:15: 0 is not within 1 to 1000000");
        let e = Config::from_toml("sip_transport = \"sctp\"").unwrap_err();
        assert_eq!(e, "1:17: `sctp` is not one of udp, tcp");
        let e = Config::from_toml("server_id = \"123\"").unwrap_err();
        assert_eq!(e, "1:13: 20 decimal digits");
        assert!(Config::from_toml("id_pattern = \"[0-9\"").is_err());
        // Typed: a number in quotes is not a number.
        assert!(Config::from_toml("sip_port = \"5070\"").is_err());
        assert!(Config::from_toml("hls = \"yes\"").is_err());
        assert_eq!(line_col("a\nbé\nc", 5), (2, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn values_are_read() {
        let c = Config::from_toml(
            "sip_port = 5070\nhls = true\npassword = \"secret\"\nrecord_dir = \"/r\"\n\
             media_transport = \"tcp-active\"\nid_pattern = \"cam-[0-9]+\"\ndata_dir = \"/d\"\n",
        )
        .unwrap();
        assert_eq!(c.sip_port, 5070);
        assert!(c.hls);
        assert_eq!(c.password, "secret");
        assert_eq!(c.record_dir.as_deref(), Some(Path::new("/r")));
        assert_eq!(c.media_transport, "tcp-active");
        assert!(c.id_policy().unwrap().is_valid("cam-12"));
        assert_eq!(c.data_dir, Path::new("/d"));
        assert_eq!(c.rtsp_port, Config::default().rtsp_port);
        assert_eq!(
            Config::from_toml("record_dir = \"\"").unwrap().record_dir,
            None
        );
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn users_tables() {
        let c = Config::from_toml(
            r#"
rtsp_port = 8555
[[users]]
user = "demo"
pass = "sha256:0123456789abcdef:0000000000000000000000000000000000000000000000000000000000000000"
ips = ["127.0.0.1", "::1/128"]
permissions = [{action = "read", path = ""}, {action = "metrics"}]
[[users]]
user = "any"
permissions = [{action = "read", path = "~^3402"}]
"#,
        )
        .unwrap();
        assert_eq!(c.rtsp_port, 8555);
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[0].user, "demo");
        assert_eq!(
            c.users[0].permissions[1].action,
            crate::auth::Action::Metrics
        );
        assert!(c.check().is_ok());
        // Unknown keys and actions are errors, with their line.
        let e = Config::from_toml("[[users]]\nuser = \"a\"\npassword = \"x\"\n").unwrap_err();
        assert!(e.starts_with("3:1: unknown field `password`"), "{e}");
        assert!(
            Config::from_toml("[[users]]\nuser = \"a\"\npermissions = [{action = \"write\"}]\n")
                .is_err()
        );
        let many = "[[users]]\nuser = \"u\"\n".repeat(MAX_USERS + 1);
        assert!(Config::from_toml(&many).unwrap_err().contains("more than"));
        // Parsed but refused by the user table (plain-text password).
        let c = Config::from_toml("[[users]]\nuser = \"a\"\npass = \"plain\"\n").unwrap();
        assert!(c.check().is_err());
    }

    /// Garbage files are refused, never a panic.
    #[test]
    fn media_addresses_and_port_range() {
        let c = Config::from_toml(
            "media_address = \"127.0.0.1\"\nsdp_address = \"::1\"\nmedia_port_range = \"30000-30009\"\n",
        )
        .unwrap();
        assert_eq!(c.media_address, "127.0.0.1");
        assert_eq!(c.sdp_address, "::1");
        assert_eq!(c.media_port_range, "30000-30009");
        for bad in [
            "sdp_address = \"camera.example\"",
            "media_address = \"1.2.3\"",
            "media_port_range = \"0-10\"",
            "media_port_range = \"20-10\"",
            "media_port_range = \"10-70000\"",
            "media_port_range = \"10\"",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"=\"'[]{}.,-_ \n#0123456789abcdefsimulateportsip\xff";
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = Config::from_toml(&text);
            let _ = line_col(&text, (next() % 80) as usize);
            let _ = super::super::sim_device_id(&text, next() as u32);
        }
    }

    #[test]
    fn large_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("gw-config-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("big.toml");
        std::fs::write(&f, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        assert!(read(&f).unwrap_err().contains("larger than"));
        std::fs::write(&f, "sip_port = 1\n").unwrap();
        assert_eq!(read(&f).unwrap(), "sip_port = 1\n");
        assert!(read(&dir.join("missing.toml")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
