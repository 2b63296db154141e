//! Webhook signatures, both ways: `X-Toolgate-Signature: sha256=<hex>` is
//! the HMAC-SHA256, keyed with the webhook secret, of `<timestamp>.<body>`,
//! where the timestamp (`X-Toolgate-Timestamp`, Unix seconds) is part of
//! what is signed. A callback is refused when its timestamp is more than
//! [`MAX_SKEW_SECS`] from now, or when its signature was already seen
//! (remembered until its timestamp leaves the window).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

/// Unix seconds when the body was signed.
pub const TIMESTAMP_HEADER: &str = "x-toolgate-timestamp";
/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-toolgate-signature";
/// How far a callback's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: u64 = 300;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Toolgate-Signature` value of `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Why a signed callback was refused (all are 401s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadSignature {
    Missing(&'static str),
    Malformed(&'static str),
    Stale { timestamp: u64, now: u64 },
    Wrong,
    Replayed,
}

impl BadSignature {
    pub(crate) fn message(&self) -> String {
        match self {
            BadSignature::Missing(header) => format!("the {header} header is missing"),
            BadSignature::Malformed(header) => format!("the {header} header is malformed"),
            BadSignature::Stale { timestamp, now } => format!(
                "the timestamp {timestamp} is more than {MAX_SKEW_SECS} s from the gateway's clock ({now})"
            ),
            BadSignature::Wrong => "the signature does not match the body".to_string(),
            BadSignature::Replayed => "this signature was already used (a replay)".to_string(),
        }
    }
}

/// The signatures of accepted callbacks, with their timestamps, until they
/// leave the window (a replay inside it is refused; one after it is stale).
#[derive(Default)]
pub(crate) struct SeenSignatures {
    seen: Mutex<HashMap<[u8; 32], u64>>,
}

impl SeenSignatures {
    /// Checks a callback's headers against its body; on success the
    /// signature is remembered, in the same step as the replay check.
    pub(crate) fn verify(
        &self,
        secret: &[u8],
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_secs: u64,
    ) -> Result<(), BadSignature> {
        let timestamp = timestamp.ok_or(BadSignature::Missing("X-Toolgate-Timestamp"))?;
        let signature = signature.ok_or(BadSignature::Missing("X-Toolgate-Signature"))?;
        let timestamp: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| BadSignature::Malformed("X-Toolgate-Timestamp"))?;
        let mut sig = [0u8; 32];
        signature
            .trim()
            .strip_prefix("sha256=")
            .and_then(|hex_sig| hex::decode_to_slice(hex_sig, &mut sig).ok())
            .ok_or(BadSignature::Malformed("X-Toolgate-Signature"))?;
        if timestamp.abs_diff(now_secs) > MAX_SKEW_SECS {
            return Err(BadSignature::Stale {
                timestamp,
                now: now_secs,
            });
        }
        // Constant time.
        mac(secret, timestamp, body)
            .verify_slice(&sig)
            .map_err(|_| BadSignature::Wrong)?;
        let mut seen = self.seen.lock().expect("seen signatures lock");
        seen.retain(|_, t| t.saturating_add(MAX_SKEW_SECS) >= now_secs);
        if seen.insert(sig, timestamp).is_some() {
            return Err(BadSignature::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn known_answer() {
        // Computed with Python's hmac module: the signed text is "<timestamp>.<body>".
        assert_eq!(
            sign(
                b"whsec",
                1_700_000_000,
                br#"{"event":"approval.requested"}"#
            ),
            "sha256=b68624dac93a061e3a6e91654f20a063a6f9a1c95ed6fbd16f695c48321d416e"
        );
    }

    #[test]
    fn verify_cases() {
        let body = b"{\"id\":\"apr_1\"}";
        let good = sign(b"secret", NOW, body);
        let ts = NOW.to_string();
        #[allow(clippy::type_complexity)]
        let cases: &[(
            Option<&str>,
            Option<&str>,
            &[u8],
            u64,
            Result<(), BadSignature>,
        )] = &[
            (Some(&ts), Some(&good), body, NOW, Ok(())),
            (Some(&ts), Some(&good), body, NOW + MAX_SKEW_SECS, Ok(())),
            (
                Some(&ts),
                Some(&good),
                body,
                NOW + MAX_SKEW_SECS + 1,
                Err(BadSignature::Stale {
                    timestamp: NOW,
                    now: NOW + MAX_SKEW_SECS + 1,
                }),
            ),
            (
                Some(&ts),
                Some(&good),
                body,
                NOW - MAX_SKEW_SECS - 1,
                Err(BadSignature::Stale {
                    timestamp: NOW,
                    now: NOW - MAX_SKEW_SECS - 1,
                }),
            ),
            (Some(&ts), Some(&good), b"{}", NOW, Err(BadSignature::Wrong)),
            (
                None,
                Some(&good),
                body,
                NOW,
                Err(BadSignature::Missing("X-Toolgate-Timestamp")),
            ),
            (
                Some(&ts),
                None,
                body,
                NOW,
                Err(BadSignature::Missing("X-Toolgate-Signature")),
            ),
            (
                Some("soon"),
                Some(&good),
                body,
                NOW,
                Err(BadSignature::Malformed("X-Toolgate-Timestamp")),
            ),
            (
                Some(&ts),
                Some(good.trim_start_matches("sha256=")),
                body,
                NOW,
                Err(BadSignature::Malformed("X-Toolgate-Signature")),
            ),
            (
                Some(&ts),
                Some("sha256=zz"),
                body,
                NOW,
                Err(BadSignature::Malformed("X-Toolgate-Signature")),
            ),
        ];
        for (i, (t, s, b, now, expected)) in cases.iter().enumerate() {
            let seen = SeenSignatures::default();
            assert_eq!(
                &seen.verify(b"secret", *t, *s, b, *now),
                expected,
                "case {i}"
            );
        }
        let wrong_key = sign(b"other", NOW, body);
        assert_eq!(
            SeenSignatures::default().verify(b"secret", Some(&ts), Some(&wrong_key), body, NOW),
            Err(BadSignature::Wrong)
        );
    }

    #[test]
    fn a_signature_is_accepted_once_while_it_is_in_the_window() {
        let seen = SeenSignatures::default();
        let body = b"{}";
        let sig = sign(b"s", NOW, body);
        let ts = NOW.to_string();
        assert_eq!(seen.verify(b"s", Some(&ts), Some(&sig), body, NOW), Ok(()));
        assert_eq!(
            seen.verify(b"s", Some(&ts), Some(&sig), body, NOW + 10),
            Err(BadSignature::Replayed)
        );
        // Another callback is not affected, and old entries age out.
        let later = NOW + 2 * MAX_SKEW_SECS;
        let other = sign(b"s", later, body);
        assert_eq!(
            seen.verify(b"s", Some(&later.to_string()), Some(&other), body, later),
            Ok(())
        );
        assert_eq!(seen.seen.lock().unwrap().len(), 1);
    }
}
