//! A throwaway `redis-server` child process on a loopback port, without
//! persistence, for tests and the bench. It is killed when dropped.

use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::ConnectionOptions;

/// A key prefix no other store of this process uses (`kind`, the process
/// id and a count), so stores sharing one server in tests never meet.
pub fn unique_prefix(kind: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{kind}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connection options with a short cooldown, so outage tests do not wait
/// long for recovery.
pub fn quick_options() -> ConnectionOptions {
    ConnectionOptions {
        cooldown: Duration::from_millis(50),
        ..ConnectionOptions::default()
    }
}

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("redis-server is not installed (not on PATH): run ./scripts/setup.sh to install it")]
    NotInstalled,
    #[error("cannot start redis-server: {0}")]
    Spawn(io::Error),
    #[error("redis-server on port {port} exited with {status} before it listened")]
    Exited {
        port: u16,
        status: std::process::ExitStatus,
    },
    #[error("redis-server on port {port} did not listen within {seconds} s")]
    NotListening { port: u16, seconds: u64 },
    #[error("no free loopback port: {0}")]
    NoPort(io::Error),
}

/// A running `redis-server --port PORT --save '' --appendonly no`, bound
/// to 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// How long a new server has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> Result<RedisServer, ServerError> {
        // Another process can take the free port before redis-server binds
        // it: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            match RedisServer::start_on(port) {
                Err(e @ ServerError::Exited { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(ServerError::NoPort(io::ErrorKind::AddrInUse.into())))
    }

    /// Starts a server on `port`.
    pub fn start_on(port: u16) -> Result<RedisServer, ServerError> {
        let mut server = RedisServer { port, child: None };
        server.spawn()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]).
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ServerError::NotInstalled,
                _ => ServerError::Spawn(e),
            })?;
        let deadline = toolgate_clock::monotonic_now() + START_TIMEOUT;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ServerError::Exited {
                    port: self.port,
                    status,
                });
            }
            if toolgate_clock::monotonic_now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ServerError::NotListening {
                    port: self.port,
                    seconds: START_TIMEOUT.as_secs(),
                });
            }
            toolgate_clock::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(ServerError::NoPort)?;
    Ok(listener.local_addr().map_err(ServerError::NoPort)?.port())
}
