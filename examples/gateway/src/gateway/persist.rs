//! Persistence glue: endpoint events written to the store, stored registrations restored at
//! start, last keepalive times written periodically.

use super::*;

/// Stored devices printed one by one at start.
pub(super) const TREE_LINES: usize = 100;
/// DeviceInfo queries remembered at most (their answers are stored).
pub(super) const DEVICE_INFO_QUERIES: usize = 1024;
/// How often the last keepalive times are written.
pub(super) const STORE_SEEN_EVERY: Duration = Duration::from_secs(5);

/// The store's view of an endpoint event.
pub(super) fn store_write(sh: &Shared, ev: &EndpointEvent) -> Option<Write> {
    let now = gstgb28181::endpoint::now_ms();
    Some(match ev {
        EndpointEvent::Registrar(RegEvent::Registered {
            device_id,
            contact,
            source,
            expires_s,
            refresh,
        }) => Write::Registered {
            device_id: device_id.clone(),
            address: source.clone(),
            transport: sh.endpoint.transport().as_str().into(),
            contact: contact.clone(),
            now_ms: now,
            expires_at_ms: now + u64::from(*expires_s) * 1000,
            refresh: *refresh,
        },
        EndpointEvent::Registrar(RegEvent::Unregistered { device_id, .. }) => Write::Unregistered {
            device_id: device_id.clone(),
        },
        EndpointEvent::Registrar(RegEvent::Online { device_id }) => Write::Seen {
            device_id: device_id.clone(),
            at_ms: now,
        },
        EndpointEvent::Catalog {
            device_id, items, ..
        } => Write::Catalog {
            device_id: device_id.clone(),
            channels: items
                .iter()
                .filter(|i| !i.device_id.is_empty())
                .take(sh.cfg.max_channels_per_device)
                .map(|i| ChannelInfo {
                    id: i.device_id.clone(),
                    name: i.name.clone(),
                    parent_id: i.parent_id.clone(),
                    status: i.status.clone(),
                    ptz_type: i.ptz_type,
                    manufacturer: i.manufacturer.clone(),
                    model: i.model.clone(),
                })
                .collect(),
        },
        // Only the answer to our query, about the device we asked.
        EndpointEvent::DeviceInfo { sn, info } => {
            let asked = lock(&sh.device_info_queries).remove(sn)?;
            if asked != info.device_id {
                return None;
            }
            Write::DeviceInfo {
                device_id: asked,
                manufacturer: info.manufacturer.clone(),
                model: info.model.clone(),
                firmware: info.firmware.clone(),
            }
        }
        _ => return None,
    })
}

/// Puts back, in the endpoint, the registrations stored in the data dir that are still
/// valid; returns the devices restored with their stored channels (to mount). Prints the
/// stored device tree, one line a device (the first [`TREE_LINES`], then a count).
pub(super) fn restore_from_store(
    store: &Store,
    endpoint: &Endpoint,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", store.path().display());
    let devices = store.devices().map_err(err)?;
    let now = gstgb28181::endpoint::now_ms();
    let transport = endpoint.transport().as_str();
    let mut restored = Vec::new();
    let total = devices.len();
    for (n, d) in devices.into_iter().enumerate() {
        let channels: Vec<String> = store
            .channels(&d.id)
            .map_err(err)?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let outcome = if d.expires_at_ms <= now {
            Err("registration expired")
        } else if d.transport != transport {
            Err("registered over another SIP transport")
        } else {
            endpoint.restore(
                &RestoredBinding {
                    device_id: d.id.clone(),
                    contact: d.contact.clone(),
                    source: d.address.clone(),
                    registered_at_ms: d.registered_at_ms,
                    expires_at_ms: d.expires_at_ms,
                    last_seen_ms: d.last_keepalive_ms,
                },
                &channels,
            )
        };
        let state = match outcome {
            Ok(()) => format!(
                "registration from {} restored, valid for {} s",
                printable(&d.address),
                (d.expires_at_ms - now) / 1000
            ),
            Err(why) => format!("not restored: {why}"),
        };
        if n < TREE_LINES {
            println!(
                "[gateway] stored device {} ({} channels): {state}",
                printable(&d.id),
                channels.len()
            );
        }
        if outcome.is_ok() {
            restored.push((d.id, channels));
        }
    }
    println!(
        "[gateway] data dir {}: {total} devices stored, {} registrations restored",
        store.path().display(),
        restored.len()
    );
    Ok(restored)
}

/// The store's writer, which also writes the devices' last keepalive times every
/// [`STORE_SEEN_EVERY`] (those that changed).
pub(super) fn start_store_worker(
    store: Store,
    endpoint: &Arc<Endpoint>,
) -> std::io::Result<StoreWorker> {
    let ep = Arc::downgrade(endpoint);
    let mut written: HashMap<String, u64> = HashMap::new();
    StoreWorker::start(store, STORE_SEEN_EVERY, move || {
        let Some(ep) = ep.upgrade() else {
            return Vec::new();
        };
        let devices = ep.devices();
        // Only devices still registered are remembered (bounded by max-devices).
        let mut now_written = HashMap::with_capacity(devices.len());
        let mut writes = Vec::new();
        for d in devices {
            if written.get(&d.id) != Some(&d.last_seen_ms) && !d.restored {
                writes.push(Write::Seen {
                    device_id: d.id.clone(),
                    at_ms: d.last_seen_ms,
                });
            }
            now_written.insert(d.id, d.last_seen_ms);
        }
        written = now_written;
        writes
    })
}
