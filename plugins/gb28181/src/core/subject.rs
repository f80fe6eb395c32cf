//! The INVITE `Subject` header: `<media sender id>:<ssrc>,<media receiver id>:<serial>`,
//! e.g. `34020000001320000001:0200000001,34020000002020000001:0`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub sender_id: String,
    pub ssrc: String,
    pub receiver_id: String,
    pub receiver_serial: String,
}

impl Subject {
    pub fn new(channel_id: &str, ssrc: &str, platform_id: &str) -> Self {
        Subject {
            sender_id: channel_id.to_string(),
            ssrc: ssrc.to_string(),
            receiver_id: platform_id.to_string(),
            receiver_serial: "0".to_string(),
        }
    }

    pub fn parse(v: &str) -> Option<Subject> {
        let (a, b) = v.trim().split_once(',')?;
        let (sender_id, ssrc) = a.trim().split_once(':')?;
        let (receiver_id, serial) = b.trim().split_once(':')?;
        if sender_id.is_empty() || receiver_id.is_empty() {
            return None;
        }
        Some(Subject {
            sender_id: sender_id.to_string(),
            ssrc: ssrc.to_string(),
            receiver_id: receiver_id.to_string(),
            receiver_serial: serial.to_string(),
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{},{}:{}",
            self.sender_id, self.ssrc, self.receiver_id, self.receiver_serial
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = "34020000001320000001:0200000001,34020000002020000001:0";
        let s = Subject::parse(v).unwrap();
        assert_eq!(s.sender_id, "34020000001320000001");
        assert_eq!(s.ssrc, "0200000001");
        assert_eq!(s.to_string(), v);
        assert_eq!(
            Subject::new("34020000001320000001", "0200000001", "34020000002020000001"),
            s
        );
        assert!(Subject::parse("garbage").is_none());
        assert!(Subject::parse(":1,:0").is_none());
    }
}
