//! The pin suite against the in-memory, SQLite and Redis stores (a real
//! redis-server on a free port; ./scripts/setup.sh installs it).

use std::sync::Arc;
use toolgate_pins::{suite, MemoryPins, PinStore, RedisPins, SqlitePins};

#[test]
fn memory_pins() {
    suite::run_all(&|| Arc::new(MemoryPins::new()));
}

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

#[test]
fn redis_pins() {
    let Some(exe) = which("redis-server") else {
        panic!("redis-server is not installed: run ./scripts/setup.sh");
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = std::process::Command::new(exe)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}/0");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let counter = std::sync::atomic::AtomicU32::new(0);
    suite::run_all(&|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(RedisPins::connect(&url, &format!("test{n}")).unwrap())
    });
    let down = RedisPins::connect("redis://127.0.0.1:1/0", "x").unwrap();
    assert!(
        down.list().is_err(),
        "an unreachable Redis is an error, not an empty list"
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
