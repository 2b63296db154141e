//! The connection to Redis: one multiplexed connection that every caller's
//! requests are pipelined on, driven by a small tokio runtime on a thread of
//! its own, so blocking callers on any thread and async callers on any
//! runtime share it. A broken connection is dropped and a new one opened by
//! the next call; a failed attempt to connect is not repeated before the
//! cooldown has passed, and every wait is bounded (connect timeout,
//! response timeout).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, Value};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::script::{Invocation, Lua};
use crate::{redact, StateError};

/// How long the store waits for Redis, and how often it tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Longest wait to connect and load the scripts (default 200 ms).
    pub connect_timeout: Duration,
    /// Longest wait for the answer to one decision (default 500 ms).
    pub response_timeout: Duration,
    /// After a failed attempt to connect, calls fail at once for this long
    /// before the next attempt (default 250 ms).
    pub cooldown: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> ConnectionOptions {
        ConnectionOptions {
            connect_timeout: Duration::from_millis(200),
            response_timeout: Duration::from_millis(500),
            cooldown: Duration::from_millis(250),
        }
    }
}

/// Why a script run did not answer.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// No connection could be made, or it broke (or timed out) on the way.
    Unreachable(String),
    /// Redis answered with an error.
    Failed(String),
}

/// A handle on the connection thread; dropping it stops the thread.
pub(crate) struct Link {
    handle: Handle,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

struct Shared {
    client: redis::Client,
    options: ConnectionOptions,
    /// Loaded on every new connection.
    scripts: &'static [&'static Lua],
    /// The connection in use and its generation (`None` when broken).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting: one attempt at a time.
    attempts: tokio::sync::Mutex<Attempts>,
}

struct Attempts {
    generation: u64,
    /// No new attempt before this (after a failed one).
    retry_at: Option<Instant>,
    last_error: String,
}

impl Link {
    /// The link to the Redis at `url` with `scripts`, and the server's
    /// `HOST:PORT` (for messages). Only a malformed URL, or a thread that
    /// cannot be started, is an error: the server is reached later.
    pub(crate) fn connect(
        url: &str,
        options: ConnectionOptions,
        scripts: &'static [&'static Lua],
    ) -> Result<(Link, String), StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?;
        let address = client.get_connection_info().addr.to_string();
        Ok((Link::start(client, options, scripts)?, address))
    }

    /// Starts the connection thread and a first attempt to connect (a
    /// failure is only remembered: calls report it until the cooldown ends).
    /// `scripts` are loaded on every new connection.
    pub(crate) fn start(
        client: redis::Client,
        options: ConnectionOptions,
        scripts: &'static [&'static Lua],
    ) -> std::io::Result<Link> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("toolgate-redis".into())
            .spawn(move || {
                // Ends when the Link (and its sender) is dropped; the runtime
                // and every task on it are dropped on this thread.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let shared = Arc::new(Shared {
            client,
            options,
            scripts,
            current: Mutex::new(None),
            attempts: tokio::sync::Mutex::new(Attempts {
                generation: 0,
                retry_at: None,
                last_error: String::new(),
            }),
        });
        let warm = shared.clone();
        handle.spawn(async move {
            let _ = warm.connection().await;
        });
        Ok(Link {
            handle,
            shared,
            _stop: stop,
        })
    }

    /// Runs a script and waits for the answer, blocking this thread (any
    /// thread, including one that drives an async runtime).
    pub(crate) fn run_blocking(&self, invocation: Invocation) -> Result<Value, LinkError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let shared = self.shared.clone();
        self.handle.spawn(async move {
            let _ = tx.send(shared.run(&invocation).await);
        });
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs a script on the connection thread; the future can be awaited on
    /// any runtime (or none).
    pub(crate) fn run_async(
        &self,
        invocation: Invocation,
    ) -> impl std::future::Future<Output = Result<Value, LinkError>> + Send + 'static {
        let shared = self.shared.clone();
        let task = self
            .handle
            .spawn(async move { shared.run(&invocation).await });
        async move { task.await.unwrap_or_else(|_| Err(stopped())) }
    }

    /// Runs a script without waiting for it. It is queued before any call
    /// made after this returns, on one connection, so they see its effect.
    pub(crate) fn run_detached(&self, invocation: Invocation) {
        let shared = self.shared.clone();
        self.handle.spawn(async move {
            let _ = shared.run(&invocation).await;
        });
    }
}

fn stopped() -> LinkError {
    LinkError::Failed("the connection thread has stopped".into())
}

impl Shared {
    async fn run(&self, invocation: &Invocation) -> Result<Value, LinkError> {
        let (generation, mut connection) = self.connection().await?;
        match send(&mut connection, invocation).await {
            Ok(value) => Ok(value),
            Err(e) if is_broken(&e) => {
                self.forget(generation);
                Err(LinkError::Unreachable(describe(&e, &self.options)))
            }
            Err(e) => Err(LinkError::Failed(e.to_string())),
        }
    }

    /// The connection in use, or a new one.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), LinkError> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut attempts = self.attempts.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if let Some(retry_at) = attempts.retry_at {
            if toolgate_clock::monotonic_now() < retry_at {
                return Err(LinkError::Unreachable(attempts.last_error.clone()));
            }
        }
        let timeout = self.options.connect_timeout;
        let error = match tokio::time::timeout(timeout, self.open()).await {
            Ok(Ok(connection)) => {
                attempts.generation += 1;
                attempts.retry_at = None;
                let current = (attempts.generation, connection);
                *self.lock_current() = Some(current.clone());
                return Ok(current);
            }
            Ok(Err(e)) => describe(&e, &self.options),
            Err(_) => format!("no connection within {} ms", timeout.as_millis()),
        };
        attempts.retry_at = Some(toolgate_clock::monotonic_now() + self.options.cooldown);
        attempts.last_error.clone_from(&error);
        Err(LinkError::Unreachable(error))
    }

    /// Connects and loads the scripts, so that EVALSHA finds them.
    async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.options.connect_timeout)
            .set_response_timeout(self.options.response_timeout);
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for lua in self.scripts {
            load(&mut connection, lua).await?;
        }
        Ok(connection)
    }

    /// Drops the connection of `generation` (if it is still the current
    /// one): the next call opens a new one.
    fn forget(&self, generation: u64) {
        let mut current = self.lock_current();
        if matches!(&*current, Some((g, _)) if *g == generation) {
            *current = None;
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.lock_current().clone()
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        // Every update is a single assignment: a panic cannot leave it torn.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// EVALSHA; when the server does not know the script (restarted, or its
/// script cache flushed), loads it and tries once more.
async fn send(
    connection: &mut MultiplexedConnection,
    invocation: &Invocation,
) -> Result<Value, RedisError> {
    match invocation.cmd.query_async::<Value>(connection).await {
        Err(e) if e.kind() == ErrorKind::NoScriptError => {
            load(connection, invocation.lua).await?;
            invocation.cmd.query_async::<Value>(connection).await
        }
        other => other,
    }
}

async fn load(connection: &mut MultiplexedConnection, lua: &Lua) -> Result<(), RedisError> {
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(lua.source)
        .query_async(connection)
        .await?;
    if sha != lua.sha() {
        return Err(RedisError::from((
            ErrorKind::ResponseError,
            "SCRIPT LOAD answered another hash",
            format!("{}: {sha}, expected {}", lua.name, lua.sha()),
        )));
    }
    Ok(())
}

/// Whether the connection itself failed (as opposed to Redis answering
/// with an error), so that the next call should open a new one.
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

fn describe(e: &RedisError, options: &ConnectionOptions) -> String {
    if e.is_timeout() {
        format!(
            "no answer within {} ms",
            options.response_timeout.as_millis()
        )
    } else {
        e.to_string()
    }
}
