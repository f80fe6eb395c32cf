//! Requests the platform sends: building them, client transactions (RFC 3261 timers), dialogs
//! the elements own, and the MANSCDP queries and controls.

use super::*;

impl Endpoint {
    /// Builds a request from the platform to `device_id` (Request-URI `target_id`).
    pub fn new_request(&self, method: &str, target_id: &str, dest: SocketAddr) -> Message {
        let (server_id, realm) = {
            let inner = lock(&self.inner);
            (
                inner.registrar.config.server_id.clone(),
                inner.registrar.config.realm.clone(),
            )
        };
        let ip = self.local_ip_for(dest);
        let port = self.local_addr.port();
        let mut m = Message::request(method, &format!("sip:{target_id}@{dest}"));
        m.add_header(
            "Via",
            format!(
                "SIP/2.0/{} {};rport;branch={}",
                self.key.transport.as_str(),
                addr::host_port(&ip, port),
                random::branch()
            ),
        )
        .add_header(
            "From",
            format!("<sip:{server_id}@{realm}>;tag={}", random::tag()),
        )
        .add_header("To", format!("<sip:{target_id}@{realm}>"))
        .add_header("Call-ID", format!("{}@{ip}", random::call_id()))
        .add_header("CSeq", format!("1 {method}"))
        .add_header(
            "Contact",
            format!("<sip:{server_id}@{}>", addr::host_port(&ip, port)),
        )
        .add_header("Max-Forwards", "70")
        .add_header("User-Agent", "gst-ipcam");
        m
    }

    /// Sends one message to `dest` (no transaction).
    pub fn send_to(&self, msg: &Message, dest: SocketAddr) -> io::Result<()> {
        self.send_bytes(&msg.to_bytes(), dest)
    }

    pub(super) fn send_bytes(&self, bytes: &[u8], dest: SocketAddr) -> io::Result<()> {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        match &self.socket {
            Socket::Udp(s) => s
                .send_to(bytes, addr::wire_addr(self.local_addr, dest))
                .map(|_| ()),
            Socket::Tcp { conns } => {
                let existing = lock(conns).get(&dest).and_then(|c| c.try_clone().ok());
                let mut stream = match existing {
                    Some(s) => s,
                    None => self.connect_tcp(dest)?,
                };
                stream.write_all(bytes)
            }
        }
    }

    /// Starts a client transaction: sends `msg` to `dest` (and retransmits it over UDP);
    /// responses and the timeout arrive on the returned channel.
    pub fn request(&self, msg: &Message, dest: SocketAddr) -> io::Result<mpsc::Receiver<TxReply>> {
        let (tx, rx) = mpsc::channel();
        let key = tx_key(msg)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no Call-ID/CSeq"))?;
        let kind = if key.2 == "INVITE" {
            TransactionKind::Invite
        } else {
            TransactionKind::NonInvite
        };
        let bytes = msg.to_bytes();
        {
            let mut inner = lock(&self.inner);
            if inner.transactions.len() >= MAX_TRANSACTIONS {
                return Err(io::Error::other("too many transactions"));
            }
            inner.transactions.insert(
                key,
                PendingTx {
                    request: bytes.clone(),
                    dest,
                    tx: ClientTransaction::new(kind, now_ms()),
                    reply: tx,
                },
            );
        }
        self.send_bytes(&bytes, dest)?;
        Ok(rx)
    }

    /// Sends `msg` and waits up to `timeout` for the final response.
    pub fn request_sync(
        &self,
        msg: &Message,
        dest: SocketAddr,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> io::Result<Message> {
        let rx = self.request(msg, dest)?;
        let deadline = std::time::Instant::now() + timeout;
        let got = self.wait_until(deadline, cancelled, || {
            loop {
                match rx.try_recv() {
                    Ok(TxReply::Response(r)) if r.status().is_some_and(|s| s >= 200) => {
                        return Some(Ok(r));
                    }
                    // Provisional: the final one comes later.
                    Ok(TxReply::Response(_)) => {}
                    Ok(TxReply::Timeout) => {
                        return Some(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "transaction timeout",
                        )));
                    }
                    Err(mpsc::TryRecvError::Empty) => return None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Some(Err(io::Error::other("endpoint stopped")));
                    }
                }
            }
        });
        match got {
            Err(_) => Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled")),
            Ok(None) => Err(io::Error::new(io::ErrorKind::TimedOut, "no final response")),
            Ok(Some(r)) => r,
        }
    }

    /// Registers a dialog with the device at `peer`: a BYE with its Call-ID and both its tags,
    /// from `peer`, goes to `owner` (anything else in the dialog gets 481); `ack` (sent to
    /// `peer`) is re-sent when the 2xx comes again.
    pub fn add_dialog(
        &self,
        dialog: &Dialog,
        peer: SocketAddr,
        owner: mpsc::Sender<Message>,
        ack: Option<&Message>,
    ) {
        let mut inner = lock(&self.inner);
        if inner.dialogs.len() >= MAX_DIALOGS {
            return;
        }
        inner.dialogs.insert(
            dialog.call_id.clone(),
            DialogEntry {
                owner,
                wake: None,
                ack: ack.map(|m| (m.to_bytes(), peer)),
                local_tag: dialog.local_tag.clone(),
                remote_tag: dialog.remote_tag.clone(),
                peer,
            },
        );
    }

    /// Tells the endpoint that `channel_id` belongs to registered `device_id` (a channel we
    /// address, e.g. INVITE or RecordInfo), so that the device's messages about it are
    /// accepted. Bounded by `max_channels_per_device`.
    pub fn note_channel(&self, device_id: &str, channel_id: &str) {
        lock(&self.inner).note_channel(device_id, channel_id);
    }

    /// Has `wake` called whenever the owner of dialog `call_id` is told about a request
    /// (a BYE): an owner sleeping on its media sockets wakes at once.
    pub fn set_dialog_wake(&self, call_id: &str, wake: super::DialogWake) {
        if let Some(d) = lock(&self.inner).dialogs.get_mut(call_id) {
            d.wake = Some(wake);
        }
    }

    pub fn remove_dialog(&self, call_id: &str) {
        lock(&self.inner).dialogs.remove(call_id);
    }

    /// Sends a MANSCDP query (`Catalog`, `DeviceInfo`, `DeviceStatus`) to a registered
    /// device; the answer comes as an [`EndpointEvent`]. Returns the SN.
    pub fn query(&self, device_id: &str, cmd_type: &str) -> io::Result<u32> {
        let sn = self.next_sn();
        let body = manscdp::build_query(cmd_type, sn, device_id);
        self.send_manscdp(device_id, device_id, &body)?;
        Ok(sn)
    }

    /// Sends a RecordInfo query for `channel_id` of `device_id` (times
    /// `yyyy-MM-ddTHH:mm:ss`); the merged answer comes as [`EndpointEvent::RecordInfo`].
    pub fn query_record_info(
        &self,
        device_id: &str,
        channel_id: &str,
        start_time: &str,
        end_time: &str,
    ) -> io::Result<u32> {
        self.note_channel(device_id, channel_id);
        let sn = self.next_sn();
        let body = manscdp::build_record_info_query(&RecordInfoQuery {
            sn,
            device_id: channel_id.to_string(),
            start_time: start_time.to_string(),
            end_time: end_time.to_string(),
            record_type: "all".into(),
        });
        self.send_manscdp(device_id, channel_id, &body)?;
        Ok(sn)
    }

    /// Sends a PTZ command to `channel_id` of `device_id`. Returns the SN.
    pub fn ptz(&self, device_id: &str, channel_id: &str, cmd: manscdp::PtzCmd) -> io::Result<u32> {
        self.note_channel(device_id, channel_id);
        let sn = self.next_sn();
        let body = manscdp::build_ptz_control(sn, channel_id, cmd);
        self.send_manscdp(device_id, channel_id, &body)?;
        Ok(sn)
    }

    /// Asks `channel_id` of `device_id` for a key frame now (DeviceControl `IFameCmd`);
    /// cameras that ignore it keep their GOP. Returns the SN.
    pub fn force_key_frame(&self, device_id: &str, channel_id: &str) -> io::Result<u32> {
        self.note_channel(device_id, channel_id);
        let sn = self.next_sn();
        let body = manscdp::build_key_frame_request(sn, channel_id);
        self.send_manscdp(device_id, channel_id, &body)?;
        Ok(sn)
    }

    pub(crate) fn send_manscdp(
        &self,
        device_id: &str,
        target_id: &str,
        body: &str,
    ) -> io::Result<()> {
        let dest = self
            .device_addr(device_id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "device not registered"))?;
        let mut m = self.new_request("MESSAGE", target_id, dest);
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(body, manscdp::Charset::Gb2312),
        );
        // Fire and forget: the answer is a separate MESSAGE.
        let _rx = self.request(&m, dest)?;
        Ok(())
    }
}
