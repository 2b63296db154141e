//! [`SqlitePins`]: the [`PinStore`] of pinned tool definitions in `pins.db`
//! of the data directory, shared by every gateway process (and `toolgate
//! pins`) on the machine.
//!
//! One table, one row per pin, the pin as JSON:
//!
//! ```sql
//! pins(server TEXT, tool TEXT, pin TEXT, PRIMARY KEY (server, tool))
//! ```
//!
//! WAL; an observation and an acceptance are each one `BEGIN IMMEDIATE`
//! transaction applying [`toolgate_pins::apply`] or
//! [`toolgate_pins::accepted`]. Any database error is
//! [`PinError::Unavailable`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;
use toolgate_pins::{accepted, apply, tool_name, Observed, Pin, PinError, PinStore};

/// The pins database file inside the data directory.
pub const PINS_DB_FILE: &str = "pins.db";

/// Pins in `pins.db` in the data directory (WAL; one transaction per operation).
pub struct SqlitePins {
    conn: Mutex<rusqlite::Connection>,
    path: PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> PinError {
    PinError::Unavailable(e.to_string())
}

impl SqlitePins {
    pub fn open(dir: &Path) -> Result<SqlitePins, PinError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(PINS_DB_FILE);
        let conn = rusqlite::Connection::open(&path)
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS pins (server TEXT NOT NULL, tool TEXT NOT NULL, pin TEXT NOT NULL, PRIMARY KEY (server, tool))",
        )
        .map_err(unavailable)?;
        Ok(SqlitePins {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(tx: &Transaction<'_>, server: &str, tool: &str) -> Result<Option<Pin>, PinError> {
        let text: Option<String> = tx
            .query_row(
                "SELECT pin FROM pins WHERE server = ?1 AND tool = ?2",
                [server, tool],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        text.map(|t| serde_json::from_str(&t).map_err(unavailable))
            .transpose()
    }

    fn write(tx: &Transaction<'_>, pin: &Pin) -> Result<(), PinError> {
        let text = serde_json::to_string(pin).map_err(unavailable)?;
        tx.execute(
            "INSERT INTO pins (server, tool, pin) VALUES (?1, ?2, ?3) ON CONFLICT (server, tool) DO UPDATE SET pin = excluded.pin",
            [pin.server.as_str(), pin.tool.as_str(), text.as_str()],
        )
        .map_err(unavailable)?;
        Ok(())
    }
}

impl PinStore for SqlitePins {
    fn observe(&self, server: &str, tool: &Value, now: u64) -> Result<Observed, PinError> {
        let mut conn = self.conn.lock().expect("pins lock");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let existing = Self::read(&tx, server, tool_name(tool))?;
        let (pin, observed) = apply(existing, server, tool, now);
        if observed != Observed::Same {
            Self::write(&tx, &pin)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(observed)
    }

    fn list(&self) -> Result<Vec<Pin>, PinError> {
        let conn = self.conn.lock().expect("pins lock");
        let mut stmt = conn
            .prepare("SELECT pin FROM pins ORDER BY server, tool")
            .map_err(unavailable)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(unavailable)?;
        rows.map(|t| {
            t.map_err(unavailable)
                .and_then(|t| serde_json::from_str(&t).map_err(unavailable))
        })
        .collect()
    }

    fn get(&self, server: &str, tool: &str) -> Result<Option<Pin>, PinError> {
        let mut conn = self.conn.lock().expect("pins lock");
        let tx = conn.transaction().map_err(unavailable)?;
        Self::read(&tx, server, tool)
    }

    fn accept(&self, server: &str, tool: &str, expected: Option<&str>) -> Result<Pin, PinError> {
        let mut conn = self.conn.lock().expect("pins lock");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let pin = Self::read(&tx, server, tool)?.ok_or_else(|| PinError::Unknown {
            server: server.into(),
            tool: tool.into(),
        })?;
        let pin = accepted(pin, expected)?;
        Self::write(&tx, &pin)?;
        tx.commit().map_err(unavailable)?;
        Ok(pin)
    }
}
