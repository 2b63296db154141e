//! The pin suite against the in-memory store (the SQLite and Redis stores
//! run it in toolgate-state-sqlite and toolgate-state-redis).

use std::sync::Arc;
use toolgate_pins::{suite, MemoryPins};

#[test]
fn memory_pins() {
    suite::run_all(&|| Arc::new(MemoryPins::new()));
}
