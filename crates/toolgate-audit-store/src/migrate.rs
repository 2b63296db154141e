//! A store of schema version 1 (each row the record's JSON text, its hashes
//! in hex, copies of the fields queries filter on) made into version 2 on
//! open: each row is kept with its seq and its hashes (the chain hashes the
//! record, not the row, so it still verifies), as columns when the record is
//! of the gateway's shape and its copies agree with it, else whole (so a row
//! edited before the migration is still named by `verify`).

use crate::codec::{encode, Row};
use crate::store::{insert_row, Interner, SCHEMA};
use crate::AuditError;
use rusqlite::Connection;
use serde_json::Value;
use std::collections::HashMap;

/// Migrates inside the caller's write transaction.
pub(crate) fn from_v1(tx: &Connection) -> Result<(), AuditError> {
    tx.execute_batch(
        "ALTER TABLE records RENAME TO records_v1;
         DROP INDEX IF EXISTS records_time;",
    )?;
    tx.execute_batch(SCHEMA)?;
    let known = HashMap::new();
    {
        let mut interner = Interner::new(tx, &known)?;
        let mut insert = tx.prepare_cached(crate::store::INSERT_SQL)?;
        let mut old = tx.prepare(
            "SELECT seq, time_ms, grant, server, tool, decision, record, prev_hash, hash
             FROM records_v1 ORDER BY seq",
        )?;
        let mut rows = old.query([])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let copies: Row<String> = Row {
                time_ms: r.get(1)?,
                grant: r.get(2)?,
                server: r.get(3)?,
                tool: r.get(4)?,
                decision: r.get(5)?,
                ..Row::default()
            };
            let text: String = r.get(6)?;
            let (prev_hash, hash): (String, String) = (r.get(7)?, r.get(8)?);
            let value = serde_json::from_str::<Value>(&text).ok();
            let encoded = value.as_ref().and_then(|v| encode(v).ok());
            let row = match encoded {
                Some(row)
                    if row.raw.is_none()
                        && row.time_ms == copies.time_ms
                        && row.grant == copies.grant
                        && row.server == copies.server.as_deref()
                        && row.tool == copies.tool
                        && row.decision == copies.decision =>
                {
                    row
                }
                _ => Row {
                    time_ms: copies.time_ms,
                    grant: copies.grant.as_str(),
                    server: copies.server.as_deref(),
                    tool: copies.tool.as_str(),
                    decision: copies.decision.as_str(),
                    raw: Some(text.clone()),
                    ..Row::default()
                },
            };
            insert_row(
                &mut insert,
                &mut |t| interner.id(t),
                seq,
                &row,
                (&prev_hash, &hash),
            )?;
        }
    }
    tx.execute_batch("DROP TABLE records_v1;")?;
    Ok(())
}
