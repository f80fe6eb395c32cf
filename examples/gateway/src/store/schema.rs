//! The database schema and its migrations, versioned with `PRAGMA user_version`: version N
//! means the first N entries of [`MIGRATIONS`] have run. Each migration runs in its own
//! transaction with the version bump, so a crash leaves the previous version intact. A
//! database written by a newer gateway (a version beyond ours) is refused, never downgraded.

use rusqlite::Connection;

/// Schema steps, oldest first. Append only: never edit one that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: devices (registration binding, DeviceInfo) and their Catalog channels.
    "CREATE TABLE devices (
        id TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL DEFAULT '',
        transport TEXT NOT NULL DEFAULT '',
        contact TEXT NOT NULL DEFAULT '',
        registered_at_ms INTEGER NOT NULL DEFAULT 0,
        expires_at_ms INTEGER NOT NULL DEFAULT 0,
        last_keepalive_ms INTEGER NOT NULL DEFAULT 0,
        manufacturer TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        firmware TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE channels (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        parent_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT '',
        ptz_type INTEGER,
        manufacturer TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (device_id, id)
    );",
    // 2: what users give: names and settings (a JSON object) per device and channel.
    "ALTER TABLE devices ADD COLUMN user_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE channels ADD COLUMN user_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE channels ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';",
];

/// The schema version this gateway writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the database to [`LATEST`]; returns the version it had.
pub fn migrate(conn: &mut Connection) -> Result<u32, String> {
    migrate_to(conn, LATEST)
}

/// Runs the migrations up to version `target` (tests build old databases with it).
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, String> {
    let from = version(conn).map_err(|e| e.to_string())?;
    if from > LATEST {
        return Err(format!(
            "schema version {from} is newer than this gateway's ({LATEST}); refusing to touch it"
        ));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target.min(LATEST) as usize)
        .skip(from as usize)
    {
        let mut step = || -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as u32 + 1)?;
            tx.commit()
        };
        step().map_err(|e| format!("migration to schema version {}: {e}", i + 1))?;
    }
    Ok(from)
}
