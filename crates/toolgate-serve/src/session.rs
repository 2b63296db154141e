//! Sealed session tokens: the `Mcp-Session-Id` the gateway hands out *is* the
//! session. It carries what the gateway needs to continue a session (the
//! grant, the protocol version, the client's capabilities), encrypted and
//! authenticated with the deployment's session key (ChaCha20-Poly1305), so
//! any gateway process holding the same key can continue a session that
//! began on another, or before a restart. Nothing per session is kept in
//! memory unless a stream is open. The same key seals other state the
//! gateway hands a client to give back (a server's `requestState`), each
//! kind bound to its purpose so one is never taken for another.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a session token holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Random id: the scope of `session` counters and the key of streams.
    pub id: String,
    /// The grant that opened it; every request must come with that grant's token.
    pub grant: String,
    /// The negotiated protocol version.
    pub version: String,
    /// The client's declared capabilities.
    #[serde(default)]
    pub caps: Value,
    /// Seconds since the Unix epoch when the session began.
    pub created: u64,
}

impl Session {
    pub fn can_sample(&self) -> bool {
        self.caps.get("sampling").is_some()
    }
}

pub struct SessionKey {
    cipher: ChaCha20Poly1305,
}

impl SessionKey {
    pub fn new(key: [u8; 32]) -> SessionKey {
        SessionKey {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    pub fn random() -> SessionKey {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("system randomness");
        SessionKey::new(key)
    }

    /// The token for a session: base64url(nonce ‖ sealed JSON).
    pub fn seal(&self, session: &Session) -> String {
        self.seal_for(b"", &serde_json::to_vec(session).expect("serialisable"))
    }

    /// `plain` sealed for `purpose` (authenticated with it, not carried):
    /// base64url(nonce ‖ sealed bytes). Opens only with the same purpose.
    pub fn seal_for(&self, purpose: &[u8], plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).expect("system randomness");
        let payload = Payload {
            msg: plain,
            aad: purpose,
        };
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The session a token stands for; `None` for anything forged, altered,
    /// sealed with another key, or not a token at all.
    pub fn open(&self, token: &str) -> Option<Session> {
        serde_json::from_slice(&self.open_for(b"", token)?).ok()
    }

    /// What [`SessionKey::seal_for`] sealed for `purpose`; `None` for
    /// anything forged, altered, sealed with another key or for another
    /// purpose.
    pub fn open_for(&self, purpose: &[u8], token: &str) -> Option<Vec<u8>> {
        if token.len() > 8192 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let payload = Payload {
            msg: sealed,
            aad: purpose,
        };
        self.cipher.decrypt(Nonce::from_slice(nonce), payload).ok()
    }
}

pub fn random_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            id: random_id(),
            grant: "alice".into(),
            version: "2025-11-25".into(),
            caps: serde_json::json!({"sampling": {}}),
            created: 1,
        }
    }

    #[test]
    fn a_token_opens_with_the_same_key_only() {
        let key = SessionKey::new([7; 32]);
        let token = key.seal(&session());
        assert_eq!(key.open(&token).unwrap().grant, "alice");
        assert!(SessionKey::new([8; 32]).open(&token).is_none());
    }

    #[test]
    fn an_altered_token_does_not_open() {
        let key = SessionKey::new([7; 32]);
        let token = key.seal(&session());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(key.open(&URL_SAFE_NO_PAD.encode(bytes)).is_none());
        assert!(key.open("not a token").is_none());
        assert!(key.open("").is_none());
    }

    #[test]
    fn state_sealed_for_one_purpose_opens_for_that_purpose_only() {
        let key = SessionKey::new([7; 32]);
        let sealed = key.seal_for(b"upstream-state", b"{\"state\":1}");
        assert_eq!(
            key.open_for(b"upstream-state", &sealed).as_deref(),
            Some(&b"{\"state\":1}"[..])
        );
        assert!(key.open_for(b"other", &sealed).is_none());
        assert!(key.open(&sealed).is_none(), "not a session token");
        let token = key.seal(&session());
        assert!(key.open_for(b"upstream-state", &token).is_none());
    }

    #[test]
    fn tokens_are_visible_ascii() {
        let token = SessionKey::random().seal(&session());
        assert!(token.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}
