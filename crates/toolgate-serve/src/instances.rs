//! Per-session server instances: started on a session's first request,
//! owned by it (what the server asks outside a call goes to that session),
//! stopped when unused, with the session, or at shutdown.

use crate::gateway::rpc;
use crate::gateway::Gateway;
use crate::streams::ask_client;
use crate::upstreams::{AnyUpstream, Upstream};
use foldhash::HashMap;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use toolgate_call::answer::Era;
use toolgate_jsonrpc::INTERNAL_ERROR;
use toolgate_upstream::{BoxFuture, Downstream, RpcError, UpstreamEvent};

/// How long a per-session instance may sit unused before it is stopped.
pub(crate) const INSTANCE_IDLE: Duration = Duration::from_secs(15 * 60);

/// The per-session instances, by (server index, session id).
pub(crate) struct Instances {
    pub(crate) map: tokio::sync::Mutex<HashMap<(usize, String), Instance>>,
    /// The runtime the gateway was made on: per-session server instances
    /// run there, not on the serving thread of the request that started
    /// them, so they live (and are shut down) with the gateway.
    pub(crate) runtime: tokio::runtime::Handle,
}

/// A per-session instance of a server.
pub(crate) struct Instance {
    pub(crate) upstream: AnyUpstream,
    pub(crate) last_used: Instant,
}

impl Gateway {
    /// A client's `notifications/roots/list_changed`: passed on to the
    /// session's own per-session server instances (a shared server serves
    /// many sessions, whose roots differ, so it is not told).
    pub async fn roots_changed(&self, session: &str) {
        let owned: Vec<AnyUpstream> = self
            .instances
            .map
            .lock()
            .await
            .iter()
            .filter(|((_, owner), _)| owner == session)
            .map(|(_, instance)| instance.upstream.clone())
            .collect();
        for upstream in owned {
            upstream
                .notify("notifications/roots/list_changed", None)
                .await;
        }
    }

    /// The upstream that serves a session's requests to a server: the shared
    /// connection, or the session's own instance of a per-session server
    /// (started on first use).
    pub(crate) async fn upstream_for(
        self: &Arc<Self>,
        server: usize,
        session: &str,
        era: Era,
    ) -> Result<AnyUpstream, RpcError> {
        let Some(spec) = &self.servers[server].per_session else {
            // A server that speaks both generations serves 2026-07-28
            // clients over its stateless link while it is up.
            if era == Era::Stateless {
                if let Some(twin) = self.twin_of(server) {
                    return Ok(twin);
                }
            }
            return Ok(self.servers[server].upstream.clone());
        };
        let key = (server, session.to_string());
        let mut instances = self.instances.map.lock().await;
        if let Some(instance) = instances.get_mut(&key) {
            instance.last_used = toolgate_clock::monotonic_now();
            return Ok(instance.upstream.clone());
        }
        // Its own events: list changes of one instance concern its session only.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let owner = Arc::new(SessionLink {
            gateway: Arc::downgrade(self),
            session: session.to_string(),
        });
        let weak = Arc::downgrade(self);
        let upstream = {
            let _gateways_runtime = self.instances.runtime.enter();
            let upstream = AnyUpstream::Real(toolgate_upstream::Upstream::start_owned(
                spec.clone(),
                tx,
                Some(owner),
            ));
            let owner = session.to_string();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let Some(gateway) = weak.upgrade() else {
                        return;
                    };
                    if let UpstreamEvent::Notification { method, params, .. } = event {
                        let mut message = json!({"jsonrpc": "2.0", "method": method});
                        if let Some(params) = params {
                            message["params"] = params;
                        }
                        gateway.send_to_session(&owner, &message);
                    }
                }
            });
            upstream
        };
        instances.insert(
            key,
            Instance {
                upstream: upstream.clone(),
                last_used: toolgate_clock::monotonic_now(),
            },
        );
        drop(instances);
        if !upstream.wait_ready(Duration::from_secs(30)).await {
            return Err(rpc(
                INTERNAL_ERROR,
                &format!(
                    "server {:?}: the session's instance did not start",
                    self.servers[server].name
                ),
            ));
        }
        Ok(upstream)
    }

    /// Stops per-session instances unused for `idle`.
    pub(crate) async fn reap_instances(&self, idle: Duration) {
        let stale: Vec<Instance> = {
            let mut instances = self.instances.map.lock().await;
            let keys: Vec<_> = instances
                .iter()
                .filter(|(_, i)| i.last_used.elapsed() > idle)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| instances.remove(&k))
                .collect()
        };
        for instance in stale {
            instance.upstream.shutdown(Duration::from_secs(2)).await;
        }
    }
}

/// The client session that owns a per-session server instance: what the
/// server asks outside any call (`roots/list` after it starts, or after the
/// client's `notifications/roots/list_changed`) goes to the session's GET
/// stream.
pub(crate) struct SessionLink {
    pub(crate) gateway: std::sync::Weak<Gateway>,
    pub(crate) session: String,
}

impl Downstream for SessionLink {
    fn request(&self, method: String, params: Option<Value>) -> BoxFuture<Result<Value, RpcError>> {
        let Some(gateway) = self.gateway.upgrade() else {
            return Box::pin(async { Err(rpc(INTERNAL_ERROR, "gateway shutting down")) });
        };
        let (to, session) = (gateway.clone(), self.session.clone());
        ask_client(&gateway, &self.session, method, params, move |m| {
            to.send_to_session(&session, &m)
        })
    }

    fn notify(&self, method: String, params: Option<Value>) {
        if let Some(gateway) = self.gateway.upgrade() {
            let mut message = json!({"jsonrpc": "2.0", "method": method});
            if let Some(params) = params {
                message["params"] = params;
            }
            gateway.send_to_session(&self.session, &message);
        }
    }

    fn session(&self) -> &str {
        &self.session
    }

    fn reachable(&self) -> bool {
        self.gateway.upgrade().is_some_and(|g| {
            g.streams
                .by_session
                .lock()
                .expect("streams lock")
                .get(&self.session)
                .is_some_and(|s| !s.senders.is_empty())
        })
    }
}
