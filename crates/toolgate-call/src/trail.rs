//! For tests: an audit sink whose records are kept in memory, to be read
//! back by their kind.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use toolgate_audit::{AuditDestination, AuditSink, LogLevel};

/// The records written so far, as the audit trail would keep them.
#[derive(Clone, Default)]
pub(crate) struct Trail(Arc<Mutex<Vec<Value>>>);

impl AuditDestination for Trail {
    fn append(&mut self, records: &[Value]) -> Result<(), String> {
        self.0.lock().unwrap().extend_from_slice(records);
        Ok(())
    }
}

impl Trail {
    /// A sink that writes here (and says nothing on stderr).
    pub(crate) fn sink(&self) -> AuditSink {
        AuditSink::open_with_store(None, LogLevel::Warn, Some(Box::new(self.clone())))
            .expect("a sink")
    }

    /// The kinds (`decision`) of the records `sink` has written, in order.
    pub(crate) fn kinds(&self, sink: &AuditSink) -> Vec<String> {
        sink.flush();
        let records = self.0.lock().unwrap();
        records
            .iter()
            .map(|r| r["decision"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}
