//! PTZ requests of the API and their GB/T 28181 A.3 commands (the 8-byte `PTZCmd` encoding
//! itself is `gstgb28181::core::manscdp::PtzCmd`). GStreamer-free.

use gstgb28181::core::manscdp::{PtzCmd, ptz};
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pan {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tilt {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Zoom {
    In,
    Out,
}

/// A PTZ motion; no direction at all stops the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PtzRequest {
    pub pan: Option<Pan>,
    pub tilt: Option<Tilt>,
    pub zoom: Option<Zoom>,
    /// Pan and tilt speed, 0..=255 (default 128).
    #[schema(maximum = 255)]
    pub speed: Option<u16>,
    /// Zoom speed, 0..=15 (default 8).
    #[schema(maximum = 15)]
    pub zoom_speed: Option<u16>,
}

/// What a preset request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetOp {
    Set,
    Call,
    Delete,
}

impl PtzRequest {
    /// The command, or why the request is refused.
    pub fn command(&self) -> Result<PtzCmd, String> {
        let speed = self.speed.unwrap_or(128);
        let speed = u8::try_from(speed).map_err(|_| format!("speed {speed}: 0 to 255"))?;
        let zoom_speed = self.zoom_speed.unwrap_or(8);
        if zoom_speed > 15 {
            return Err(format!("zoom_speed {zoom_speed}: 0 to 15"));
        }
        let mut bits = 0;
        bits |= match self.pan {
            Some(Pan::Left) => ptz::LEFT,
            Some(Pan::Right) => ptz::RIGHT,
            None => 0,
        };
        bits |= match self.tilt {
            Some(Tilt::Up) => ptz::UP,
            Some(Tilt::Down) => ptz::DOWN,
            None => 0,
        };
        bits |= match self.zoom {
            Some(Zoom::In) => ptz::ZOOM_IN,
            Some(Zoom::Out) => ptz::ZOOM_OUT,
            None => 0,
        };
        if bits == 0 {
            return Ok(PtzCmd::stop());
        }
        let pan_speed = if self.pan.is_some() { speed } else { 0 };
        let tilt_speed = if self.tilt.is_some() { speed } else { 0 };
        let zoom_speed = if self.zoom.is_some() {
            zoom_speed as u8
        } else {
            0
        };
        Ok(PtzCmd::motion(bits, pan_speed, tilt_speed, zoom_speed))
    }
}

/// The command of a preset operation on preset `number` (1..=255).
pub fn preset_command(op: PresetOp, number: u32) -> Result<PtzCmd, String> {
    let n = u8::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("preset {number}: 1 to 255"))?;
    let code = match op {
        PresetOp::Set => ptz::PRESET_SET,
        PresetOp::Call => ptz::PRESET_CALL,
        PresetOp::Delete => ptz::PRESET_DELETE,
    };
    Ok(PtzCmd::preset(code, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motions_encode_per_a3() {
        let r = PtzRequest {
            pan: Some(Pan::Left),
            tilt: Some(Tilt::Up),
            speed: Some(0x40),
            ..Default::default()
        };
        // A5 0F 01, cmd = left|up, d1 = d2 = 0x40, no zoom, checksum = sum mod 256.
        assert_eq!(r.command().unwrap().to_hex(), "A50F010A4040003F");
        let z = PtzRequest {
            zoom: Some(Zoom::In),
            zoom_speed: Some(15),
            ..Default::default()
        };
        assert_eq!(z.command().unwrap().to_bytes()[3..7], [0x10, 0, 0, 0xF0]);
        assert_eq!(PtzRequest::default().command().unwrap(), PtzCmd::stop());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let r = PtzRequest {
            pan: Some(Pan::Right),
            speed: Some(256),
            ..Default::default()
        };
        assert!(r.command().is_err());
        let z = PtzRequest {
            zoom: Some(Zoom::Out),
            zoom_speed: Some(16),
            ..Default::default()
        };
        assert!(z.command().is_err());
        assert!(preset_command(PresetOp::Call, 0).is_err());
        assert!(preset_command(PresetOp::Call, 256).is_err());
        let p = preset_command(PresetOp::Call, 3).unwrap().to_bytes();
        assert_eq!(p[3..6], [0x82, 0, 3]);
        // Unknown fields are refused, not ignored.
        assert!(serde_json::from_str::<PtzRequest>(r#"{"pan":"left","x":1}"#).is_err());
        assert!(serde_json::from_str::<PtzRequest>(r#"{"pan":"sideways"}"#).is_err());
    }
}
