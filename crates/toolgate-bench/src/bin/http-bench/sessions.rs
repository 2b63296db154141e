//! Memory mode: what an open session costs a server. Opens N sessions
//! (initialize + notifications/initialized over a small pool of
//! connections; no GET stream), keeps every session id, proves a sample of
//! them still answer tools/call, and compares the server's RSS before and
//! after.

use crate::client::{Client, Mode, SessionId};
use crate::server::Server;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use toolgate_clock::monotonic_now;

pub struct Sessions {
    pub count: usize,
    pub pool: usize,
    pub sample: usize,
}

pub async fn run(server: &Server, spec: Sessions) -> Result<bool> {
    let endpoint = &server.endpoint;
    let before = server.rss_kib()?;
    let t = monotonic_now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut opened: Vec<Option<SessionId>> = vec![None; spec.count];
    let mut errors = Vec::new();
    let workers: Vec<_> = (0..spec.pool.min(spec.count).max(1))
        .map(|_| {
            let (next, endpoint, count) = (next.clone(), endpoint.clone(), spec.count);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut client = Client::connect(&endpoint).await?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(got);
                    }
                    let session = client.initialize().await;
                    let broken = session.is_err();
                    got.push((i, session));
                    if broken {
                        // The connection may be unusable now: start a new one.
                        client = Client::connect(&endpoint).await?;
                    }
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for worker in workers {
        results.push(worker.await.context("a pool task panicked")?);
    }
    for worker in results {
        for (i, session) in worker.context("a connection of the pool failed")? {
            match session {
                Ok(id) => opened[i] = Some(id),
                Err(e) => errors.push(format!("session {i}: {e:#}")),
            }
        }
    }
    let open_time = t.elapsed();
    let ok = opened.iter().filter(|s| s.is_some()).count();

    // A sample spread over all the sessions, oldest to newest, must still work.
    let mut client = Client::connect(endpoint).await?;
    let sample = spec.sample.min(ok);
    let live: Vec<&SessionId> = opened.iter().flatten().collect();
    let mut sample_errors = 0;
    for k in 0..sample {
        let session = live[k * live.len() / sample];
        let id = k as u64 + 1;
        if let Err(e) = client
            .echo(Mode::Handshake, Some(session), id, &format!("sample-{k}"))
            .await
        {
            sample_errors += 1;
            errors.push(format!("sample call {k} (session {session:?}): {e:#}"));
            client = Client::connect(endpoint).await?;
        }
    }
    let after = server.rss_kib()?;

    println!(
        "http-bench --sessions: {} at {}",
        server.name,
        server.endpoint.url()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| sessions opened | {ok} of {} ({:.0} /s over {} connections) |",
        spec.count,
        ok as f64 / open_time.as_secs_f64(),
        spec.pool
    );
    println!(
        "| errors | {} opening, {sample_errors} of {sample} sample tools/call |",
        spec.count - ok
    );
    println!("| RSS before | {before} KiB |");
    println!("| RSS after | {after} KiB |");
    println!(
        "| per session | {:.2} KiB |",
        (after as f64 - before as f64) / ok.max(1) as f64
    );
    for e in errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    if errors.len() > 5 {
        eprintln!("... and {} more errors", errors.len() - 5);
    }
    Ok(errors.is_empty() && ok == spec.count)
}
