//! One round of load against one endpoint: C client tasks, each on its own
//! keep-alive connection, each with its own session (in handshake mode),
//! sending tools/call echo back to back. Every answer is checked.

use crate::client::{Client, Endpoint, Mode};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use toolgate_clock::monotonic_now;

/// When a client stops: after a time, or after a number of calls.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    After(Duration),
    Calls(u64),
}

#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub concurrency: usize,
    pub mode: Mode,
    pub warmup: Stop,
    pub measure: Stop,
}

/// What one round measured.
pub struct Round {
    /// Calls per second, all clients together.
    pub rate: f64,
    /// Every measured call's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Round {
    pub fn percentile_us(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1e6
    }
}

pub async fn round(endpoint: Arc<Endpoint>, load: Load) -> Result<Round> {
    // All clients connect and warm up, then start measuring together.
    let barrier = Arc::new(Barrier::new(load.concurrency));
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|n| {
            let endpoint = endpoint.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                client(&endpoint, load, n, &barrier)
                    .await
                    .with_context(|| format!("client {n}"))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut first_start: Option<Instant> = None;
    let mut last_end: Option<Instant> = None;
    let mut failure = None;
    for task in tasks {
        match task.await.context("a client task panicked")? {
            Ok(measured) => {
                first_start = Some(first_start.map_or(measured.start, |t| t.min(measured.start)));
                last_end = Some(last_end.map_or(measured.end, |t| t.max(measured.end)));
                latencies.extend(measured.latencies);
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let (Some(start), Some(end)) = (first_start, last_end) else {
        anyhow::bail!("no client ran");
    };
    latencies.sort_unstable();
    anyhow::ensure!(!latencies.is_empty(), "no call was measured");
    Ok(Round {
        rate: latencies.len() as f64 / (end - start).as_secs_f64(),
        latencies,
    })
}

struct Measured {
    start: Instant,
    end: Instant,
    latencies: Vec<Duration>,
}

async fn client(endpoint: &Endpoint, load: Load, n: usize, barrier: &Barrier) -> Result<Measured> {
    // Whatever happens, reach the barrier, so the other clients never wait forever.
    let ready = prepare(endpoint, load, n).await;
    barrier.wait().await;
    let (mut client, session, mut id) = ready?;
    let session = session.as_ref();
    let mut latencies = Vec::with_capacity(match load.measure {
        Stop::Calls(calls) => calls as usize,
        Stop::After(_) => 4096,
    });
    let start = monotonic_now();
    loop {
        let t = monotonic_now();
        match load.measure {
            Stop::After(d) if t - start >= d => break,
            Stop::Calls(calls) if latencies.len() as u64 >= calls => break,
            _ => {}
        }
        id += 1;
        client
            .echo(load.mode, session, id, &format!("hello-{n}-{id}"))
            .await?;
        latencies.push(t.elapsed());
    }
    Ok(Measured {
        start,
        end: monotonic_now(),
        latencies,
    })
}

/// Connect, open a session (handshake mode), and warm up.
async fn prepare(
    endpoint: &Endpoint,
    load: Load,
    n: usize,
) -> Result<(Client<'_>, Option<crate::client::SessionId>, u64)> {
    let mut client = Client::connect(endpoint).await?;
    let session = match load.mode {
        Mode::Handshake => Some(client.initialize().await?),
        Mode::Stateless => None,
    };
    let start = monotonic_now();
    let mut id = 0;
    loop {
        match load.warmup {
            Stop::After(d) if start.elapsed() >= d => break,
            Stop::Calls(calls) if id >= calls => break,
            _ => {}
        }
        id += 1;
        client
            .echo(load.mode, session.as_ref(), id, &format!("warm-{n}-{id}"))
            .await?;
    }
    Ok((client, session, id))
}
