//! Value parsers shared by the programs' command lines (clap `value_parser`s): one check of
//! each kind of value, with the error text clap prints.

/// A GB/T 28181 ID: 20 decimal digits.
pub fn gb_id(s: &str) -> Result<String, String> {
    if gstgb28181::core::id::is_gb_id(s) {
        Ok(s.to_string())
    } else {
        Err("20 decimal digits".into())
    }
}

/// `host:port`, IPv6 as `[addr]:port` (an unbracketed v6 literal is ambiguous).
pub fn server_addr(s: &str) -> Result<(String, u16), String> {
    s.rsplit_once(':')
        .and_then(|(h, p)| {
            let h = match h.strip_prefix('[') {
                Some(v6) => v6.strip_suffix(']')?,
                None if h.contains(':') => return None,
                None => h,
            };
            let port = p.parse::<u16>().ok()?;
            (!h.is_empty()).then(|| (h.to_string(), port))
        })
        .ok_or_else(|| "IP:PORT or [IPV6]:PORT".into())
}

/// An `rtsp://` or `rtsps://` URL.
pub fn rtsp_url(s: &str) -> Result<String, String> {
    if s.starts_with("rtsp://") || s.starts_with("rtsps://") {
        Ok(s.to_string())
    } else {
        Err("an rtsp:// or rtsps:// URL".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert!(gb_id("34020000001320000001").is_ok());
        assert!(gb_id("3402").is_err());
        assert_eq!(server_addr("[::1]:5060"), Ok(("::1".to_string(), 5060)));
        assert_eq!(
            server_addr("127.0.0.1:5060"),
            Ok(("127.0.0.1".to_string(), 5060))
        );
        assert!(server_addr("::1:5060").is_err());
        assert!(server_addr(":5060").is_err());
        assert!(server_addr("host:70000").is_err());
        assert!(rtsp_url("rtsp://h/x").is_ok());
        assert!(rtsp_url("http://h/x").is_err());
    }
}
