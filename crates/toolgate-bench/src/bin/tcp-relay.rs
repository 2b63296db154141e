//! The floor for any HTTP gateway: a TCP relay that copies bytes between
//! each client connection and a fresh connection to the server, with no
//! parsing at all. `http-bench` runs it beside `toolgate serve`, so the cost
//! of an extra process hop is measured rather than guessed.
//!
//! `tcp-relay --listen 127.0.0.1:0 --to 127.0.0.1:PORT` prints
//! `listening on ADDR` on stdout, then relays until killed. Like the default
//! `toolgate serve`, it runs on one thread (a current-thread tokio runtime);
//! each accepted connection gets one upstream connection and one
//! `copy_bidirectional`, with TCP_NODELAY on both sides.

use anyhow::{Context, Result};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(
    name = "tcp-relay",
    about = "A byte relay between TCP clients and one server"
)]
struct Args {
    /// Where to accept connections (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The server every connection is relayed to (host:port, resolved once).
    #[arg(long)]
    to: String,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("tcp-relay: {e:#}");
        std::process::exit(2);
    }
}

async fn run(args: Args) -> Result<()> {
    let to = tokio::net::lookup_host(&args.to)
        .await
        .with_context(|| format!("cannot resolve {}", args.to))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.to))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors, or a connection reset before accept: go on.
                eprintln!("tcp-relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = relay(client, to).await {
                eprintln!("tcp-relay: {e:#}");
            }
        });
    }
}

async fn relay(mut client: TcpStream, to: SocketAddr) -> Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(to)
        .await
        .with_context(|| format!("cannot connect to {to}"))?;
    server.set_nodelay(true)?;
    // A reset from either side when the other closes is the normal end.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    Ok(())
}
