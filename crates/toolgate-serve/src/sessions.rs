//! Sessions as the process knows them: tokens opened through a bounded
//! cache, their expiry, and the revocation store that says whether one was
//! ended (`DELETE`) on any process sharing the state.

use crate::gateway::Gateway;
use crate::gateway::{META_CAPS, STATELESS_VERSION};
use crate::grants::Caller;
use crate::instances::Instance;
use crate::session::Session;
use crate::session::SessionKey;
use crate::upstreams::Upstream as _;
use foldhash::HashMap;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many opened session tokens are remembered (about 300 bytes each).
pub(crate) const OPENED_CAPACITY: usize = 16 * 1024;

/// The sessions this process has opened, and whether they were ended.
pub(crate) struct Sessions {
    pub(crate) key: SessionKey,
    pub(crate) ttl: Duration,
    /// Session tokens already opened (see `open_token`).
    pub(crate) opened: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) revocations: Arc<dyn toolgate_revocations::RevocationStore>,
}

/// Why a request's session is not continued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRefused {
    /// Unknown, forged, expired, another grant's, or ended (404).
    NotFound,
    /// The revocation store could not say whether it was ended (503).
    Unavailable(String),
}

impl Gateway {
    /// Ends a session: its streams, subscriptions and per-session instances (DELETE).
    pub async fn close_session(&self, session: &str) {
        self.end_session(session);
        let mine: Vec<Instance> = {
            let mut instances = self.instances.map.lock().await;
            let keys: Vec<_> = instances
                .keys()
                .filter(|(_, s)| s == session)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| instances.remove(&k))
                .collect()
        };
        for instance in mine {
            instance.upstream.shutdown(Duration::from_secs(2)).await;
        }
    }

    /// The session a token stands for, if it is valid, unexpired and the
    /// caller's own.
    pub fn session(&self, caller: &Caller, token: &str) -> Option<Arc<Session>> {
        let session = self.open_token(token)?;
        let age = (self.clock.now_ms() / 1000).saturating_sub(session.created);
        (session.grant == caller.grant.name && age <= self.sessions.ttl.as_secs())
            .then_some(session)
    }

    /// [`Gateway::session`], unless the session was ended (`DELETE`) on
    /// this or another process sharing the state. A store that cannot say
    /// is a refusal too: a session that may have ended is never continued.
    pub fn live_session(
        &self,
        caller: &Caller,
        token: &str,
    ) -> Result<Arc<Session>, SessionRefused> {
        let session = self
            .session(caller, token)
            .ok_or(SessionRefused::NotFound)?;
        match self
            .sessions
            .revocations
            .is_revoked(&session.id, self.clock.now_ms())
        {
            Ok(false) => Ok(session),
            Ok(true) => Err(SessionRefused::NotFound),
            Err(e) => Err(SessionRefused::Unavailable(e.to_string())),
        }
    }

    /// Records that `session` has ended, for every process sharing the
    /// state, until it would have expired anyway.
    pub fn revoke_session(
        &self,
        session: &Session,
    ) -> Result<(), toolgate_revocations::RevocationError> {
        // `session` accepts an age up to the TTL in whole seconds.
        let until_ms = session
            .created
            .saturating_add(self.sessions.ttl.as_secs())
            .saturating_add(1)
            .saturating_mul(1000);
        self.sessions
            .revocations
            .revoke(&session.id, self.clock.now_ms(), until_ms)
    }

    /// Opens a session token, through a bounded cache of tokens already
    /// opened: a token never changes meaning, and decrypting it on every
    /// request costs more than the rest of the request's bookkeeping.
    pub(crate) fn open_token(&self, token: &str) -> Option<Arc<Session>> {
        if let Some(session) = self.sessions.opened.lock().expect("opened lock").get(token) {
            return Some(session.clone());
        }
        let session = Arc::new(self.sessions.key.open(token)?);
        let mut opened = self.sessions.opened.lock().expect("opened lock");
        if opened.len() >= OPENED_CAPACITY {
            opened.clear();
        }
        opened.insert(token.to_string(), session.clone());
        Some(session)
    }

    /// The pseudo-session of a stateless (2026-07-28) request.
    pub fn stateless_session(&self, caller: &Caller, meta: &Value) -> Arc<Session> {
        Arc::new(Session {
            id: format!("stateless:{}", caller.grant.name),
            grant: caller.grant.name.clone(),
            version: STATELESS_VERSION.into(),
            caps: meta.get(META_CAPS).cloned().unwrap_or(json!({})),
            created: self.clock.now_ms() / 1000,
        })
    }
}
