//! One accept loop for every listener toolgate opens (`/mcp` of `toolgate
//! serve`, the admin API, dashboard and `/metrics`): at most `max` connections at once (the next
//! accept waits for a slot), and a listener out of file descriptors
//! (EMFILE, ENFILE) backs off instead of spinning on the error.

use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Whether a `Host` (or an `Origin`'s host) names this machine: `localhost`,
/// `127.0.0.1` or `::1`, with or without a port. A loopback listener takes
/// only these (and its own address): the DNS-rebinding check of `/mcp` and
/// of the admin listener alike.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The connections a listener serves at once unless told otherwise.
pub const MAX_CONNECTIONS: usize = 1024;

/// A listener with its connection cap.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, max: usize) -> Acceptor {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// The next connection, with the slot it holds until dropped.
    pub async fn accept(&self) -> (TcpStream, OwnedSemaphorePermit) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => return (stream, permit),
                Err(e) => {
                    // Out of descriptors (or memory): wait for some to be
                    // released, longer each time; other errors are the
                    // connection's own (reset before accept): try the next.
                    let exhausted = matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12));
                    if exhausted {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_listener_waits_for_a_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::new(listener, 1);
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (first, permit) = acceptor.accept().await;
        let second = tokio::time::timeout(Duration::from_millis(100), acceptor.accept()).await;
        assert!(
            second.is_err(),
            "the second waits while the first is served"
        );
        drop((first, permit));
        let second = tokio::time::timeout(Duration::from_secs(5), acceptor.accept()).await;
        assert!(second.is_ok(), "a freed slot lets the next in");
    }
}
