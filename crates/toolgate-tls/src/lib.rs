//! What toolgate's https clients trust, found once for all of them: the
//! upstream client (toolgate-upstream) and the OTLP exporter
//! (toolgate-telemetry) check servers against the same certificates, and
//! describe a failure the same way.
//!
//! Invariants: no network; the certificates come from the system's trust
//! store, or the PEM bundle in `SSL_CERT_FILE` / the directory in
//! `SSL_CERT_DIR` when set; none found is an error that says how to fix it,
//! never an empty store that trusts nothing silently.

use rustls::pki_types::CertificateDer;

/// The certificates an https peer is checked against; `what` names the
/// peer in the error ("https", "the https OTLP endpoint").
pub fn trust_roots(what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(format!(
            "no trusted CA certificates for {what} ({why}); install the system's CA bundle (ca-certificates) or set SSL_CERT_FILE to a PEM file"
        ));
    }
    Ok(found.certs)
}

/// An error with its causes, for the log: a TLS failure sits a few sources
/// below the error a client returns ("client error (Connect)", "io: ...").
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn describes_every_cause_once() {
        let e = Chain(
            "client error (Connect)",
            Some(Box::new(Chain(
                "invalid peer certificate: UnknownIssuer",
                Some(Box::new(Chain("UnknownIssuer", None))),
            ))),
        );
        assert_eq!(
            describe(&e),
            "client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }
}
