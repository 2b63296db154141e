//! Stateless twins: a second link to a server that speaks both protocol
//! generations. Such a server accepts the 2025-11-25 handshake (and is
//! spoken to with it, for 2025 clients, exactly as any other), but may offer
//! its 2026-07-28 clients other things (tools it lists only to stateless
//! clients, input-required results). Once it is ready it is asked once,
//! with `server/discover` at 2026-07-28, whether it speaks that generation;
//! when it does, a stateless link to it serves the gateway's 2026-07-28
//! clients: their catalogue holds its stateless lists, and their requests
//! go over that link. A server that does not is never asked again.

use crate::gateway::Gateway;
use crate::upstreams::{AnyUpstream, Upstream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_audit::LogLevel;
use toolgate_upstream::UpstreamEvent;

/// How long the one `server/discover` asking a server whether it speaks
/// 2026-07-28 may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Gateway {
    /// Asks server `index` (once, when it is first ready) whether it also
    /// speaks 2026-07-28, and keeps its stateless link when it does. Only a
    /// shared server reached with `protocol: auto` over Streamable HTTP and
    /// spoken to with the handshake is asked (the upstream decides).
    pub(crate) async fn probe_twin(self: &Arc<Self>, index: usize) {
        let server = &self.servers[index];
        if server.per_session.is_some() || server.probed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let Some(twin) = server.upstream.stateless_twin(tx, PROBE_TIMEOUT).await else {
            return;
        };
        self.audit.log(
            LogLevel::Info,
            &format!(
                "server {:?} also speaks 2026-07-28: its 2026-07-28 clients are served over a stateless link",
                server.name
            ),
        );
        *server.twin.write().expect("twin lock") = Some(twin);
        tokio::spawn(watch_twin(Arc::downgrade(self), index, rx));
    }

    /// Server `index`'s stateless link while it is up.
    pub(crate) fn twin_of(&self, index: usize) -> Option<AnyUpstream> {
        self.servers[index]
            .twin
            .read()
            .expect("twin lock")
            .clone()
            .filter(|twin| twin.info().is_some())
    }
}

/// Follows a stateless link's events: its lists are fetched again when it
/// comes back or says they changed, and dropped while it is down (2026
/// clients then see the handshake link's lists, and are served over it).
async fn watch_twin(
    gateway: Weak<Gateway>,
    index: usize,
    mut events: mpsc::UnboundedReceiver<UpstreamEvent>,
) {
    while let Some(event) = events.recv().await {
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match event {
            UpstreamEvent::Ready { .. } => {
                let held = gateway.lists.twins.lock().expect("lists lock")[index].is_some();
                if !held && gateway.refresh(index).await {
                    gateway.broadcast_list_changed();
                }
            }
            UpstreamEvent::Down { server, reason } => {
                gateway.audit.log(
                    LogLevel::Warn,
                    &format!("the stateless link to server {server:?} is down: {reason}"),
                );
                let held = gateway.lists.twins.lock().expect("lists lock")[index].take();
                if held.is_some() {
                    gateway.rebuild();
                    gateway.broadcast_list_changed();
                }
            }
            // From its listen stream: passed on whatever changed (see `watch`).
            UpstreamEvent::Notification { method, .. } => {
                if method.ends_with("/list_changed") {
                    gateway.refresh(index).await;
                    gateway.broadcast(serde_json::json!({"jsonrpc": "2.0", "method": method}));
                }
            }
        }
    }
}
