//! What survives a restart, in SQLite under `--data-dir` (`<data-dir>/gateway.db`, WAL):
//! devices (registration binding: address, transport, contact, registered/expiry times, last
//! keepalive; DeviceInfo: manufacturer, model, firmware; a user-given name and settings) and
//! their channels (from Catalog: name, parent, status, PTZ type; a user-given name and
//! settings). Schema versions and migrations: [`schema`]. Writes come from the gateway's event
//! dispatcher through a bounded queue to one worker thread ([`worker`]) that batches them into
//! transactions; a database error is logged and counted, never stops serving.
//!
//! Nothing read back is trusted more than what the network said: rows are bounded (at most
//! `max_devices` devices and `max_channels_per_device` channels each, text fields cut to
//! [`MAX_TEXT`] bytes, settings to [`MAX_SETTINGS`]) and the IDs and addresses of restored
//! bindings are checked again by the SIP endpoint and the mount path before any use.

pub mod schema;
pub mod worker;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// The database file inside the data directory.
pub const DB_FILE: &str = "gateway.db";
/// Longest stored name, address or other text field (bytes; longer ones are cut).
pub const MAX_TEXT: usize = 256;
/// Longest settings document (bytes; longer ones are refused).
pub const MAX_SETTINGS: usize = 64 * 1024;

/// Row caps (the gateway's own limits).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_devices: usize,
    pub max_channels_per_device: usize,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceRow {
    pub id: String,
    /// `ip:port` of the authenticated REGISTER.
    pub address: String,
    /// `UDP` or `TCP`.
    pub transport: String,
    pub contact: String,
    pub registered_at_ms: u64,
    /// 0 once unregistered or expired.
    pub expires_at_ms: u64,
    pub last_keepalive_ms: u64,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub user_name: String,
    pub settings: String,
}

/// A stored channel (a Catalog item of a device).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelRow {
    pub device_id: String,
    pub id: String,
    pub name: String,
    pub parent_id: String,
    pub status: String,
    pub ptz_type: Option<u32>,
    pub manufacturer: String,
    pub model: String,
    pub user_name: String,
    pub settings: String,
}

/// What the catalog says about a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    pub id: String,
    pub name: String,
    pub parent_id: String,
    pub status: String,
    pub ptz_type: Option<u32>,
    pub manufacturer: String,
    pub model: String,
}

/// One change to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// An authenticated REGISTER (`refresh`: a renewal, which keeps `registered_at_ms`).
    Registered {
        device_id: String,
        address: String,
        transport: String,
        contact: String,
        now_ms: u64,
        expires_at_ms: u64,
        refresh: bool,
    },
    /// Unregistered or expired: the device stays in the tree, its binding is gone.
    Unregistered {
        device_id: String,
    },
    /// Last keepalive (or REGISTER) time.
    Seen {
        device_id: String,
        at_ms: u64,
    },
    Catalog {
        device_id: String,
        channels: Vec<ChannelInfo>,
    },
    DeviceInfo {
        device_id: String,
        manufacturer: String,
        model: String,
        firmware: String,
    },
    DeviceName {
        device_id: String,
        name: String,
    },
    /// A JSON object (refused otherwise, or beyond [`MAX_SETTINGS`]).
    DeviceSettings {
        device_id: String,
        settings: String,
    },
    ChannelName {
        device_id: String,
        channel_id: String,
        name: String,
    },
    /// A JSON object (refused otherwise, or beyond [`MAX_SETTINGS`]).
    ChannelSettings {
        device_id: String,
        channel_id: String,
        settings: String,
    },
}

/// Whether `s` may be stored as settings: a JSON object of at most [`MAX_SETTINGS`] bytes.
fn valid_settings(s: &str) -> bool {
    s.len() <= MAX_SETTINGS
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).is_ok()
}

/// What [`Store::apply`] did not store because of a cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub refused: u64,
}

pub struct Store {
    conn: Connection,
    limits: Limits,
    path: PathBuf,
}

/// `s` cut to at most `max` bytes on a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens (creating it, mode 0700) `dir` and the database in it, in WAL mode, migrated to
    /// the latest schema. Refused with a message naming the file: a directory that is a
    /// symlink, not ours or writable by others, a database file that is a symlink, a file that
    /// is not a database or is corrupt, a schema newer than this gateway's.
    pub fn open(dir: &Path, limits: Limits) -> Result<Store, String> {
        let dir = crate::http::files::ensure_private(dir).map_err(|e| format!("data dir: {e}"))?;
        let path = dir.join(DB_FILE);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("{} is a symlink; refusing it", path.display()));
        }
        {
            // Created private (SQLite would create it with the umask's mode).
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Store::open_file(&path, limits)
    }

    /// Opens the database file `path` itself (see [`Store::open`]).
    pub fn open_file(path: &Path, limits: Limits) -> Result<Store, String> {
        let show = path.display();
        let err = |e: &dyn std::fmt::Display| format!("{show}: {e}");
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| err(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err(&e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| err(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("{show}: journal mode {mode}, WAL expected"));
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| err(&e))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| err(&e))?;
        if check != "ok" {
            return Err(format!(
                "{show}: corrupt database: {}",
                bounded(&check, 200)
            ));
        }
        schema::migrate(&mut conn).map_err(|e| err(&e))?;
        Ok(Store {
            conn,
            limits,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> rusqlite::Result<u32> {
        schema::version(&self.conn)
    }

    /// Applies `writes` in one transaction (all or nothing).
    pub fn apply(&mut self, writes: &[Write]) -> rusqlite::Result<Applied> {
        let limits = self.limits;
        let tx = self.conn.transaction()?;
        let mut applied = Applied::default();
        for w in writes {
            if !apply_one(&tx, limits, w)? {
                applied.refused += 1;
            }
        }
        tx.commit()?;
        Ok(applied)
    }

    /// Every stored device (at most `max_devices`), oldest registration first.
    pub fn devices(&self) -> rusqlite::Result<Vec<DeviceRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, address, transport, contact, registered_at_ms, expires_at_ms,
                    last_keepalive_ms, manufacturer, model, firmware, user_name, settings
             FROM devices ORDER BY registered_at_ms, id LIMIT ?1",
        )?;
        let rows = st.query_map([ms(self.limits.max_devices as u64)], |r| {
            Ok(DeviceRow {
                id: r.get(0)?,
                address: r.get(1)?,
                transport: r.get(2)?,
                contact: r.get(3)?,
                registered_at_ms: unms(r.get(4)?),
                expires_at_ms: unms(r.get(5)?),
                last_keepalive_ms: unms(r.get(6)?),
                manufacturer: r.get(7)?,
                model: r.get(8)?,
                firmware: r.get(9)?,
                user_name: r.get(10)?,
                settings: r.get(11)?,
            })
        })?;
        rows.collect()
    }

    /// The channels of `device_id` (at most `max_channels_per_device`), in catalog order.
    pub fn channels(&self, device_id: &str) -> rusqlite::Result<Vec<ChannelRow>> {
        let mut st = self.conn.prepare(
            "SELECT device_id, id, name, parent_id, status, ptz_type, manufacturer, model,
                    user_name, settings
             FROM channels WHERE device_id = ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let rows = st.query_map(
            params![device_id, ms(self.limits.max_channels_per_device as u64)],
            |r| {
                Ok(ChannelRow {
                    device_id: r.get(0)?,
                    id: r.get(1)?,
                    name: r.get(2)?,
                    parent_id: r.get(3)?,
                    status: r.get(4)?,
                    ptz_type: r
                        .get::<_, Option<i64>>(5)?
                        .and_then(|v| u32::try_from(v).ok()),
                    manufacturer: r.get(6)?,
                    model: r.get(7)?,
                    user_name: r.get(8)?,
                    settings: r.get(9)?,
                })
            },
        )?;
        rows.collect()
    }
}

/// Makes sure `device_id` has a row, within `max_devices`: when full, the device with the
/// oldest keepalive among those without a binding makes room; if none can, false.
fn ensure_device(tx: &Connection, limits: Limits, device_id: &str) -> rusqlite::Result<bool> {
    let exists = tx
        .query_row("SELECT 1 FROM devices WHERE id = ?1", [device_id], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    if exists {
        return Ok(true);
    }
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0))?;
    if count as u64 >= limits.max_devices as u64 {
        let evicted = tx.execute(
            "DELETE FROM devices WHERE id = (SELECT id FROM devices WHERE expires_at_ms = 0
             ORDER BY last_keepalive_ms, id LIMIT 1)",
            [],
        )?;
        if evicted == 0 {
            return Ok(false);
        }
    }
    tx.execute("INSERT INTO devices (id) VALUES (?1)", [device_id])?;
    Ok(true)
}

/// Applies one write; false when a cap refused it.
fn apply_one(tx: &Connection, limits: Limits, w: &Write) -> rusqlite::Result<bool> {
    let t = |s: &str| bounded(s, MAX_TEXT).to_string();
    match w {
        Write::Registered {
            device_id,
            address,
            transport,
            contact,
            now_ms,
            expires_at_ms,
            refresh,
        } => {
            if !ensure_device(tx, limits, device_id)? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE devices SET address = ?2, transport = ?3, contact = ?4,
                    registered_at_ms = CASE WHEN ?7 AND registered_at_ms > 0
                                            THEN registered_at_ms ELSE ?5 END,
                    expires_at_ms = ?6, last_keepalive_ms = ?5
                 WHERE id = ?1",
                params![
                    device_id,
                    t(address),
                    t(transport),
                    t(contact),
                    ms(*now_ms),
                    ms(*expires_at_ms),
                    refresh
                ],
            )?;
        }
        Write::Unregistered { device_id } => {
            tx.execute(
                "UPDATE devices SET expires_at_ms = 0 WHERE id = ?1",
                [device_id],
            )?;
        }
        Write::Seen { device_id, at_ms } => {
            tx.execute(
                "UPDATE devices SET last_keepalive_ms = ?2
                 WHERE id = ?1 AND last_keepalive_ms < ?2",
                params![device_id, ms(*at_ms)],
            )?;
        }
        Write::Catalog {
            device_id,
            channels,
        } => {
            if !ensure_device(tx, limits, device_id)? {
                return Ok(false);
            }
            let mut count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM channels WHERE device_id = ?1",
                [device_id],
                |r| r.get(0),
            )?;
            let mut refused = false;
            for c in channels {
                let known = tx
                    .query_row(
                        "SELECT 1 FROM channels WHERE device_id = ?1 AND id = ?2",
                        params![device_id, c.id],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !known {
                    if count as u64 >= limits.max_channels_per_device as u64 {
                        refused = true;
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO channels (device_id, id) VALUES (?1, ?2)",
                        params![device_id, t(&c.id)],
                    )?;
                    count += 1;
                }
                tx.execute(
                    "UPDATE channels SET name = ?3, parent_id = ?4, status = ?5, ptz_type = ?6,
                        manufacturer = ?7, model = ?8
                     WHERE device_id = ?1 AND id = ?2",
                    params![
                        device_id,
                        c.id,
                        t(&c.name),
                        t(&c.parent_id),
                        t(&c.status),
                        c.ptz_type,
                        t(&c.manufacturer),
                        t(&c.model)
                    ],
                )?;
            }
            return Ok(!refused);
        }
        Write::DeviceInfo {
            device_id,
            manufacturer,
            model,
            firmware,
        } => {
            tx.execute(
                "UPDATE devices SET manufacturer = ?2, model = ?3, firmware = ?4 WHERE id = ?1",
                params![device_id, t(manufacturer), t(model), t(firmware)],
            )?;
        }
        Write::DeviceName { device_id, name } => {
            tx.execute(
                "UPDATE devices SET user_name = ?2 WHERE id = ?1",
                params![device_id, t(name)],
            )?;
        }
        Write::DeviceSettings {
            device_id,
            settings,
        } => {
            if !valid_settings(settings) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE devices SET settings = ?2 WHERE id = ?1",
                params![device_id, settings],
            )?;
        }
        Write::ChannelName {
            device_id,
            channel_id,
            name,
        } => {
            tx.execute(
                "UPDATE channels SET user_name = ?3 WHERE device_id = ?1 AND id = ?2",
                params![device_id, channel_id, t(name)],
            )?;
        }
        Write::ChannelSettings {
            device_id,
            channel_id,
            settings,
        } => {
            if !valid_settings(settings) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE channels SET settings = ?3 WHERE device_id = ?1 AND id = ?2",
                params![device_id, channel_id, settings],
            )?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
