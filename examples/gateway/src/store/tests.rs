use super::*;

const DEV: &str = "34020000001320000001";
const CH: &str = "34020000001310000001";

fn limits() -> Limits {
    Limits {
        max_devices: 3,
        max_channels_per_device: 2,
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gw-store-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn registered(id: &str, now_ms: u64) -> Write {
    Write::Registered {
        device_id: id.into(),
        address: "127.0.0.1:5061".into(),
        transport: "UDP".into(),
        contact: format!("sip:{id}@127.0.0.1:5061"),
        now_ms,
        expires_at_ms: now_ms + 3_600_000,
        refresh: false,
    }
}

fn channel(id: &str) -> ChannelInfo {
    ChannelInfo {
        id: id.into(),
        name: format!("camera {id}"),
        parent_id: DEV.into(),
        status: "ON".into(),
        ptz_type: Some(3),
        manufacturer: "gst-ipcam".into(),
        model: "sim".into(),
    }
}

#[test]
fn round_trip_survives_reopen() {
    let d = dir("round-trip");
    {
        let mut s = Store::open(&d, limits()).unwrap();
        let a = s
            .apply(&[
                registered(DEV, 1_000),
                Write::Catalog {
                    device_id: DEV.into(),
                    channels: vec![channel(CH)],
                },
                Write::DeviceInfo {
                    device_id: DEV.into(),
                    manufacturer: "Acme".into(),
                    model: "X1".into(),
                    firmware: "2.0".into(),
                },
                Write::Seen {
                    device_id: DEV.into(),
                    at_ms: 5_000,
                },
                // Older than what is stored: ignored.
                Write::Seen {
                    device_id: DEV.into(),
                    at_ms: 4_000,
                },
                Write::DeviceName {
                    device_id: DEV.into(),
                    name: "Gate".into(),
                },
                Write::DeviceSettings {
                    device_id: DEV.into(),
                    settings: r#"{"zone":"north"}"#.into(),
                },
                Write::ChannelName {
                    device_id: DEV.into(),
                    channel_id: CH.into(),
                    name: "Gate, left".into(),
                },
                Write::ChannelSettings {
                    device_id: DEV.into(),
                    channel_id: CH.into(),
                    settings: r#"{"record":true}"#.into(),
                },
                // A renewal keeps the first registration time.
                match registered(DEV, 6_000) {
                    Write::Registered {
                        device_id,
                        address,
                        transport,
                        contact,
                        now_ms,
                        expires_at_ms,
                        ..
                    } => Write::Registered {
                        device_id,
                        address,
                        transport,
                        contact,
                        now_ms,
                        expires_at_ms,
                        refresh: true,
                    },
                    _ => unreachable!(),
                },
            ])
            .unwrap();
        assert_eq!(a.refused, 0);
    }
    let s = Store::open(&d, limits()).unwrap();
    let devices = s.devices().unwrap();
    assert_eq!(
        devices,
        vec![DeviceRow {
            id: DEV.into(),
            address: "127.0.0.1:5061".into(),
            transport: "UDP".into(),
            contact: format!("sip:{DEV}@127.0.0.1:5061"),
            registered_at_ms: 1_000,
            expires_at_ms: 6_000 + 3_600_000,
            last_keepalive_ms: 6_000,
            manufacturer: "Acme".into(),
            model: "X1".into(),
            firmware: "2.0".into(),
            user_name: "Gate".into(),
            settings: r#"{"zone":"north"}"#.into(),
        }]
    );
    let chans = s.channels(DEV).unwrap();
    assert_eq!(chans.len(), 1);
    assert_eq!(chans[0].name, format!("camera {CH}"));
    assert_eq!(chans[0].ptz_type, Some(3));
    assert_eq!(chans[0].user_name, "Gate, left");
    assert_eq!(chans[0].settings, r#"{"record":true}"#);

    // A new catalog updates what the device says, not what the user gave.
    let mut s = s;
    s.apply(&[Write::Catalog {
        device_id: DEV.into(),
        channels: vec![ChannelInfo {
            status: "OFF".into(),
            ..channel(CH)
        }],
    }])
    .unwrap();
    let c = &s.channels(DEV).unwrap()[0];
    assert_eq!(
        (c.status.as_str(), c.user_name.as_str()),
        ("OFF", "Gate, left")
    );

    // Unregistered: still in the tree, without a binding.
    s.apply(&[Write::Unregistered {
        device_id: DEV.into(),
    }])
    .unwrap();
    assert_eq!(s.devices().unwrap()[0].expires_at_ms, 0);
    assert_eq!(s.channels(DEV).unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn caps_bound_rows_and_text() {
    let d = dir("caps");
    let mut s = Store::open(&d, limits()).unwrap();
    let ids: Vec<String> = (1..=4).map(|i| format!("3402000000132000000{i}")).collect();
    let a = s
        .apply(
            &ids.iter()
                .map(|id| registered(id, 1_000))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    // Three devices at most, all with live bindings: the fourth is refused.
    assert_eq!(a.refused, 1);
    assert_eq!(s.devices().unwrap().len(), 3);
    // Once one has no binding, a new device takes its place.
    s.apply(&[Write::Unregistered {
        device_id: ids[1].clone(),
    }])
    .unwrap();
    assert_eq!(s.apply(&[registered(&ids[3], 2_000)]).unwrap().refused, 0);
    let now: Vec<String> = s.devices().unwrap().into_iter().map(|d| d.id).collect();
    assert!(!now.contains(&ids[1]) && now.contains(&ids[3]), "{now:?}");

    // Two channels per device at most; long names are cut on a character boundary.
    let long = "é".repeat(1000);
    let a = s
        .apply(&[Write::Catalog {
            device_id: ids[0].clone(),
            channels: (1..=3)
                .map(|i| ChannelInfo {
                    name: long.clone(),
                    ..channel(&format!("3402000000131000000{i}"))
                })
                .collect(),
        }])
        .unwrap();
    assert_eq!(a.refused, 1);
    let chans = s.channels(&ids[0]).unwrap();
    assert_eq!(chans.len(), 2);
    assert!(chans[0].name.len() <= MAX_TEXT && chans[0].name.starts_with('é'));
    // Settings must be a JSON object, and not too large.
    for bad in [
        "not json",
        "[1,2]",
        &format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_SETTINGS)),
    ] {
        let w = Write::ChannelSettings {
            device_id: ids[0].clone(),
            channel_id: chans[0].id.clone(),
            settings: bad.to_string(),
        };
        assert_eq!(s.apply(&[w]).unwrap().refused, 1);
    }
    assert_eq!(s.channels(&ids[0]).unwrap()[0].settings, "{}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A database of schema version 1 (before user-given names) is migrated, rows kept.
#[test]
fn old_schema_is_migrated() {
    let d = dir("migrate");
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join(DB_FILE);
    {
        let mut c = Connection::open(&path).unwrap();
        schema::migrate_to(&mut c, 1).unwrap();
        assert_eq!(schema::version(&c).unwrap(), 1);
        c.execute(
            "INSERT INTO devices (id, address, expires_at_ms) VALUES (?1, '127.0.0.1:5061', 99)",
            [DEV],
        )
        .unwrap();
        c.execute(
            "INSERT INTO channels (device_id, id, name) VALUES (?1, ?2, 'old')",
            [DEV, CH],
        )
        .unwrap();
    }
    let s = Store::open(&d, limits()).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::LATEST);
    let dev = &s.devices().unwrap()[0];
    assert_eq!(
        (dev.address.as_str(), dev.expires_at_ms),
        ("127.0.0.1:5061", 99)
    );
    assert_eq!(dev.user_name, "");
    let c = &s.channels(DEV).unwrap()[0];
    assert_eq!((c.name.as_str(), c.settings.as_str()), ("old", "{}"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn refuses_newer_corrupt_and_symlinked_databases() {
    // Newer schema.
    let d = dir("newer");
    std::fs::create_dir_all(&d).unwrap();
    {
        let c = Connection::open(d.join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", schema::LATEST + 1)
            .unwrap();
    }
    let e = Store::open(&d, limits()).err().unwrap();
    assert!(e.contains("newer"), "{e}");
    let _ = std::fs::remove_dir_all(&d);

    // Not a database.
    let d = dir("garbage");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(DB_FILE), vec![0x5a; 8192]).unwrap();
    let e = Store::open(&d, limits()).err().unwrap();
    assert!(e.contains(DB_FILE) && e.contains("not a database"), "{e}");
    let _ = std::fs::remove_dir_all(&d);

    // The database file is a symlink (to a file elsewhere).
    let d = dir("symlink");
    std::fs::create_dir_all(&d).unwrap();
    let target = d.with_extension("elsewhere");
    std::fs::write(&target, b"").unwrap();
    std::os::unix::fs::symlink(&target, d.join(DB_FILE)).unwrap();
    let e = Store::open(&d, limits()).err().unwrap();
    assert!(e.contains("symlink"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap().len(), 0);
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_file(&target);

    // The data dir is a file.
    let f = dir("file");
    std::fs::write(&f, b"x").unwrap();
    assert!(Store::open(&f, limits()).is_err());
    let _ = std::fs::remove_file(&f);
}

#[test]
fn database_is_wal_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("wal");
    let s = Store::open(&d, limits()).unwrap();
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let perm = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(perm(&d), 0o700);
    assert_eq!(perm(&d.join(DB_FILE)), 0o600);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

/// The worker batches queued writes, applies the tick's, and flushes at stop.
#[test]
fn worker_applies_queued_and_periodic_writes() {
    let d = dir("worker");
    let s = Store::open(&d, limits()).unwrap();
    let mut w = worker::StoreWorker::start(s, std::time::Duration::from_secs(3600), || {
        vec![Write::Seen {
            device_id: DEV.into(),
            at_ms: 9_000,
        }]
    })
    .unwrap();
    let tx = w.sender();
    assert!(tx.send(registered(DEV, 1_000)));
    w.stop();
    assert!(
        !tx.send(registered(DEV, 2_000)),
        "stopped worker took a write"
    );
    let stats = w.stats();
    assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    let s = Store::open(&d, limits()).unwrap();
    assert_eq!(s.devices().unwrap()[0].last_keepalive_ms, 9_000);
    let _ = std::fs::remove_dir_all(&d);
}

/// A failing transaction is counted and the worker goes on with the next writes.
#[test]
fn worker_survives_database_errors() {
    use std::sync::atomic::Ordering::Relaxed;
    let d = dir("worker-errors");
    let s = Store::open(&d, limits()).unwrap();
    // Another connection breaks the schema under the worker's feet.
    Connection::open(d.join(DB_FILE))
        .unwrap()
        .execute_batch("DROP TABLE channels")
        .unwrap();
    let mut w =
        worker::StoreWorker::start(s, std::time::Duration::from_secs(3600), Vec::new).unwrap();
    let tx = w.sender();
    assert!(tx.send(Write::Catalog {
        device_id: DEV.into(),
        channels: vec![channel(CH)],
    }));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.stats().errors.load(Relaxed) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(w.stats().errors.load(Relaxed), 1);
    assert!(tx.send(registered(DEV, 1_000)));
    w.stop();
    assert_eq!(w.stats().errors.load(Relaxed), 1);
    assert_eq!(w.stats().writes.load(Relaxed), 1);
    let c = Connection::open(d.join(DB_FILE)).unwrap();
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let _ = std::fs::remove_dir_all(&d);
}
