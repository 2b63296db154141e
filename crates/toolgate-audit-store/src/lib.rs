//! The audit trail in the embedded store: one SQLite file, `<data-dir>/audit.db`,
//! that only grows at its end, can be queried, and shows when it was edited.
//!
//! A tour:
//! - [`AuditStore`] (`store.rs`) opens the file (WAL, so readers never wait on
//!   the gateway), appends records, queries them, verifies the chain and prunes
//!   old records.
//! - `chain.rs` is the hash chain: every row carries `prev_hash` and
//!   `hash = sha256(prev_hash || canonical JSON of the record)`, so editing a
//!   record, editing a hash or deleting a row breaks the chain at that row.
//! - `codec.rs` turns a record into the compact columns of its row and back
//!   (about 180 bytes a typical call on disk; `tests/size.rs` measures it);
//!   `migrate.rs` makes a store of schema version 1 (JSON text in every row)
//!   into version 2 when it is opened.
//! - `time.rs` reads the RFC 3339 times the gateway writes into its records.
//! - [`default_data_dir`] is where toolgate keeps its state when no
//!   `--data-dir` is given.
//!
//! Invariants: the store reads no clock (times come from the records and from
//! the caller) and no environment (except [`default_data_dir`], which exists
//! to read it); every append reads the chain's head and writes the new rows in
//! one `BEGIN IMMEDIATE` transaction, so several processes appending to one
//! directory still make one chain.

mod chain;
mod codec;
mod data_dir;
mod migrate;
mod store;
mod time;

pub use chain::{chain_hash, GENESIS_HASH};
pub use data_dir::{data_dir_from, default_data_dir};
pub use store::{AuditError, AuditStore, Filter, PruneReport, StoredRecord, VerifyReport, DB_FILE};
pub use time::parse_rfc3339;
