//! SqlitePins against the shared pin suite, and two stores on one data
//! directory seeing the same pins.

use std::sync::Arc;
use toolgate_pins::{suite, PinStore};
use toolgate_state_sqlite::SqlitePins;

#[test]
fn sqlite_pins_and_sharing_between_processes_of_one_dir() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicU32::new(0);
    suite::run_all(&|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(SqlitePins::open(&dir.path().join(n.to_string())).unwrap())
    });
    // Two stores on one directory see the same pins.
    let a = SqlitePins::open(dir.path()).unwrap();
    let b = SqlitePins::open(dir.path()).unwrap();
    a.observe(
        "s",
        &serde_json::json!({"name": "t", "description": "one"}),
        1,
    )
    .unwrap();
    assert!(b.get("s", "t").unwrap().is_some());
}
