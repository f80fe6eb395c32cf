//! One platform → device call: wait for the device's registration, open the media socket
//! (port range, bind vs announced address), choose the SSRC, INVITE with the SDP offer, ACK,
//! read the answer (SSRC, TCP-active address), and BYE when it ends or fails half-way.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::core::addr;
use crate::core::mansrtsp::{self, Command};
use crate::core::media::SsrcPolicy;
use crate::core::sdp::{self, MediaTransport, Offer, SessionKind};
use crate::core::sip::Message;
use crate::core::ssrc::{Ssrc, SsrcKind};
use crate::core::subject::Subject;
use crate::core::transaction::Dialog;
use crate::endpoint::Endpoint;
use crate::receiver::MediaReceiver;

/// Serial numbers for the SSRCs of this process's calls (1..=9999, GB/T 28181 Annex F).
static SSRC_SERIAL: AtomicU32 = AtomicU32::new(1);

/// How long a device has to answer an INVITE (Timer B is 32 s; the device may ring first).
const INVITE_TIMEOUT: Duration = Duration::from_secs(34);

/// How long a device has to answer a playback control INFO (wvp-GB28181-pro does not wait;
/// cameras answer within a second).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(4);

/// What a call asks for.
#[derive(Debug, Clone)]
pub struct CallParams {
    /// The platform's own ID (SDP origin, Subject).
    pub server_id: String,
    /// The SIP domain (SSRC prefix).
    pub domain: String,
    pub device_id: String,
    pub channel_id: String,
    pub kind: SessionKind,
    pub transport: MediaTransport,
    /// Where the media socket is bound (None: the address that reaches the device).
    pub media_address: Option<IpAddr>,
    /// What the SDP offer announces (None: the bound address), e.g. behind NAT.
    pub sdp_address: Option<IpAddr>,
    /// Ports to try in order (`[0]`: any).
    pub ports: Vec<u16>,
    /// Playback/download range (Unix seconds) and download speed.
    pub start: u64,
    pub end: u64,
    pub download_speed: u32,
    /// How long to wait for the device to register.
    pub wait_timeout: Duration,
    /// UDP receive buffer to ask for (0: the system's).
    pub buffer_size: usize,
    /// Largest reassembled PS frame.
    pub max_frame_size: usize,
    /// How media senders are checked against the answer (by dialog unless strict).
    pub ssrc_policy: SsrcPolicy,
}

/// Progress reported while a call is set up (logs, counters).
#[derive(Debug)]
pub enum CallEvent<'a> {
    /// The INVITE is about to go out.
    Inviting {
        dest: SocketAddr,
        media: SocketAddr,
        transport: MediaTransport,
        ssrc: &'a str,
    },
    /// The receive buffer asked for and what the system gave (None: not a UDP socket).
    ReceiveBuffer(std::io::Result<Option<usize>>),
}

/// Why a call could not be set up.
#[derive(Debug)]
pub enum CallError {
    /// `cancelled` said so (the element is flushing).
    Cancelled,
    NotRegistered {
        device_id: String,
        waited: Duration,
    },
    MediaSocket {
        bind: SocketAddr,
        error: std::io::Error,
    },
    NoAnswer {
        device_id: String,
        error: std::io::Error,
    },
    Refused {
        device_id: String,
        status: u16,
    },
    BadAnswer,
    MediaConnect(std::io::Error),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Cancelled => write!(f, "cancelled"),
            CallError::NotRegistered { device_id, waited } => write!(
                f,
                "Device {device_id} did not register within {} s",
                waited.as_secs()
            ),
            CallError::MediaSocket { bind, error } => {
                write!(f, "Could not open media socket {bind}: {error}")
            }
            CallError::NoAnswer { device_id, error } => {
                write!(f, "Device {device_id} did not answer the INVITE: {error}")
            }
            CallError::Refused { device_id, status } => {
                write!(f, "Device {device_id} refused the INVITE: {status}")
            }
            CallError::BadAnswer => write!(f, "Bad 200 OK to INVITE"),
            CallError::MediaConnect(e) => {
                write!(f, "Could not connect to the device's media address: {e}")
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Why a playback control (MANSRTSP INFO) failed.
#[derive(Debug)]
pub enum ControlError {
    /// A scale not in [`mansrtsp::SCALES`] or a position out of range: nothing sent.
    Invalid(&'static str),
    Cancelled,
    NoAnswer(std::io::Error),
    Refused(u16),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Invalid(what) => write!(f, "invalid {what}"),
            ControlError::Cancelled => write!(f, "cancelled"),
            ControlError::NoAnswer(e) => write!(f, "the device did not answer the INFO: {e}"),
            ControlError::Refused(status) => write!(f, "the device refused the INFO: {status}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// An established call. Hang up with [`Call::hang_up`]; the device's BYE arrives on `bye_rx`.
pub struct Call {
    pub dialog: Dialog,
    /// The device's SIP address.
    pub dest: SocketAddr,
    /// The SSRC offered.
    pub ssrc: String,
    /// The SSRC the device answered with, if it said one.
    pub answer_ssrc: Option<u32>,
    /// Taken out by whoever receives (the call keeps no lock around it).
    pub receiver: Option<MediaReceiver>,
    pub bye_rx: mpsc::Receiver<Message>,
    /// CSeq of the last MANSRTSP request.
    control_cseq: u32,
}

impl Call {
    /// Sets up a call on `ep`. `cancelled` is polled while waiting (registration, answer).
    pub fn start(
        ep: &Endpoint,
        p: &CallParams,
        cancelled: &dyn Fn() -> bool,
        on_event: &mut dyn FnMut(CallEvent<'_>),
    ) -> Result<Call, CallError> {
        let dest = wait_for_device(ep, &p.device_id, &p.channel_id, p.wait_timeout, cancelled)?;
        let family = addr::Family::of(dest.ip());
        let bind_ip = p.media_address.unwrap_or_else(|| {
            ep.local_ip_for(dest)
                .parse()
                .unwrap_or(family.unspecified())
        });
        let media_ip = p.sdp_address.unwrap_or(bind_ip);
        let ports = if p.ports.is_empty() {
            vec![0]
        } else {
            p.ports.clone()
        };
        let open = |f: fn(SocketAddr, usize) -> std::io::Result<MediaReceiver>| {
            let mut last = Err(std::io::Error::other("empty media-port-range"));
            for port in &ports {
                last = f(SocketAddr::new(bind_ip, *port), p.max_frame_size);
                if last.is_ok() {
                    break;
                }
            }
            last
        };
        let bind = SocketAddr::new(bind_ip, ports[0]);
        let receiver = match p.transport {
            MediaTransport::Udp => Some(open(MediaReceiver::udp)),
            MediaTransport::TcpPassive => Some(open(MediaReceiver::tcp_listen)),
            MediaTransport::TcpActive => None,
        };
        let receiver = receiver
            .transpose()
            .map_err(|error| CallError::MediaSocket { bind, error })?;
        let media_port = receiver
            .as_ref()
            .and_then(|r| r.local_addr().ok())
            .map(|a| a.port())
            .unwrap_or(9);
        let ssrc = next_ssrc(p);
        let offer = Offer {
            kind: p.kind,
            origin_id: p.server_id.clone(),
            ip: media_ip.to_string(),
            port: media_port,
            transport: p.transport,
            ssrc: ssrc.clone(),
            channel_id: p.channel_id.clone(),
            start: p.start,
            end: p.end,
            download_speed: Some(p.download_speed),
            format: None,
        };
        let mut invite = ep.new_request("INVITE", &p.channel_id, dest);
        invite.add_header(
            "Subject",
            Subject::new(&p.channel_id, &ssrc, &p.server_id).to_string(),
        );
        invite.set_body("APPLICATION/SDP", offer.to_sdp().into_bytes());
        on_event(CallEvent::Inviting {
            dest,
            media: SocketAddr::new(media_ip, media_port),
            transport: p.transport,
            ssrc: &ssrc,
        });
        let resp = ep
            .request_sync(&invite, dest, INVITE_TIMEOUT, cancelled)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::Interrupted => CallError::Cancelled,
                _ => CallError::NoAnswer {
                    device_id: p.device_id.clone(),
                    error,
                },
            })?;
        let status = resp.status().unwrap_or(0);
        if !(200..300).contains(&status) {
            return Err(CallError::Refused {
                device_id: p.device_id.clone(),
                status,
            });
        }
        let dialog = Dialog::from_invite(&invite, &resp).ok_or(CallError::BadAnswer)?;
        let ack = dialog.ack();
        let (bye_tx, bye_rx) = mpsc::channel();
        ep.add_dialog(&dialog, dest, bye_tx, Some(&ack));
        let _ = ep.send_to(&ack, dest);
        let answer = sdp::parse(&resp.body).ok();
        let answer_ssrc = answer
            .as_ref()
            .and_then(|a| a.ssrc.as_deref())
            .and_then(|y| y.trim().parse::<u32>().ok());
        let mut receiver = match receiver {
            Some(r) => r,
            None => {
                // TCP active: connect to the answer's address.
                let r = answer
                    .as_ref()
                    .and_then(|a| a.media_addr())
                    .map(|a| addr::media_target(a, dest))
                    .ok_or_else(|| std::io::Error::other("no media address in the answer"))
                    .and_then(|a| MediaReceiver::tcp_connect(a, p.max_frame_size));
                match r {
                    Ok(r) => r,
                    Err(e) => {
                        hang_up(ep, &dialog, dest);
                        return Err(CallError::MediaConnect(e));
                    }
                }
            }
        };
        receiver.set_sender_check(answer_ssrc, dest.ip(), p.ssrc_policy);
        if p.buffer_size > 0 {
            on_event(CallEvent::ReceiveBuffer(
                receiver.set_recv_buffer_size(p.buffer_size),
            ));
        }
        Ok(Call {
            dialog,
            dest,
            ssrc,
            answer_ssrc,
            receiver: Some(receiver),
            bye_rx,
            control_cseq: 0,
        })
    }

    /// The INFO carrying `command` (MANSRTSP, next CSeq) in this call's dialog, to send with
    /// [`send_control`] (without holding whatever lock guards the call). Refuses a scale
    /// outside [`mansrtsp::SCALES`] and a position outside 0..[`mansrtsp::MAX_NPT_S`].
    pub fn control_info(&mut self, command: Command) -> Result<Message, ControlError> {
        if let Command::Play { npt, scale } = command {
            if scale.is_some_and(|x| !mansrtsp::valid_scale(x)) {
                return Err(ControlError::Invalid("scale"));
            }
            if npt.is_some_and(|t| !mansrtsp::valid_npt(t)) {
                return Err(ControlError::Invalid("position"));
            }
        }
        self.control_cseq = self.control_cseq.wrapping_add(1);
        let body = mansrtsp::Request {
            cseq: self.control_cseq,
            command,
        }
        .to_body();
        Ok(self.dialog.info(&body))
    }

    /// Ends the call from our side: the dialog is forgotten and BYE sent (its transaction
    /// retransmits by itself; nobody waits for the answer).
    pub fn hang_up(&self, ep: &Endpoint) {
        hang_up(ep, &self.dialog, self.dest);
    }
}

/// Sends a playback control INFO ([`Call::control_info`]) to `dest` and waits for the final
/// answer: 2xx is success.
pub fn send_control(
    ep: &Endpoint,
    info: &Message,
    dest: SocketAddr,
    timeout: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), ControlError> {
    let resp = ep
        .request_sync(info, dest, timeout, cancelled)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::Interrupted => ControlError::Cancelled,
            _ => ControlError::NoAnswer(e),
        })?;
    match resp.status().unwrap_or(0) {
        200..=299 => Ok(()),
        status => Err(ControlError::Refused(status)),
    }
}

fn hang_up(ep: &Endpoint, dialog: &Dialog, dest: SocketAddr) {
    ep.remove_dialog(&dialog.call_id);
    let mut d = dialog.clone();
    let _ = ep.request(&d.bye(), dest);
}

/// How long a call waits for the endpoint's subscribers to be told the events queued
/// before it (normally microseconds; a stuck subscriber only delays the call this long).
const EVENTS_FLUSH_WAIT: Duration = Duration::from_millis(500);

/// Waits until `device_id` is registered (asleep until the endpoint changes); its messages
/// about `channel_id` are then believed.
pub(super) fn wait_for_device(
    ep: &Endpoint,
    device_id: &str,
    channel_id: &str,
    wait: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<SocketAddr, CallError> {
    let found = ep.wait_until(Instant::now() + wait, cancelled, || {
        ep.device_addr(device_id)
    });
    match found {
        Err(_) => Err(CallError::Cancelled),
        Ok(Some(a)) => {
            ep.note_channel(device_id, channel_id);
            // The registration's event is told before anything the call does (an element
            // posts "device registered" on its bus before "stream started").
            ep.flush_events(EVENTS_FLUSH_WAIT);
            Ok(a)
        }
        Ok(None) => Err(CallError::NotRegistered {
            device_id: device_id.to_string(),
            waited: wait,
        }),
    }
}

/// A new SSRC for the call's kind (live or history) in the platform's domain.
fn next_ssrc(p: &CallParams) -> String {
    let serial = SSRC_SERIAL.fetch_add(1, Ordering::Relaxed) % 9_999 + 1;
    let kind = match p.kind {
        SessionKind::Play => SsrcKind::Live,
        SessionKind::Playback | SessionKind::Download => SsrcKind::History,
    };
    Ssrc::new(kind, &p.domain, serial)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("0{serial:09}"))
}
