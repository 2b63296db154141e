//! Hot reload: the policy in force can be replaced while the gateway runs.
//! A [`LivePolicy`] is read on every decision (one uncontended read lock)
//! and swapped whole by [`watch_policy_file`] when the file changes. An
//! invalid edit is logged with the validate messages and the old policy
//! stays in force. Counters live in the store, keyed by counter name, so a
//! reload never resets them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use toolgate_audit::{AuditSink, LogLevel};
use toolgate_policy::{parse_policy, Format, Policy};

/// The policy in force.
pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
}

impl LivePolicy {
    pub fn new(policy: Arc<Policy>) -> LivePolicy {
        LivePolicy {
            current: RwLock::new(policy),
        }
    }

    pub fn get(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set(&self, policy: Arc<Policy>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }
}

/// How often a watched file is looked at.
pub const POLL: Duration = Duration::from_millis(200);

/// What identifies a version of a file: modification time and length.
pub fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and validates a policy file; the error is every diagnostic.
pub fn load_policy_file(path: &Path) -> Result<Policy, String> {
    let format = Format::from_path(path).ok_or_else(|| {
        format!(
            "{}: unknown policy format (use .json, .yaml or .yml)",
            path.display()
        )
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_policy(&text, format, &path.display().to_string()).map_err(|d| d.to_string())
}

/// Watches a policy file on a thread of its own; on every change that
/// validates, swaps it into `live` and calls `changed`.
pub fn watch_policy_file(
    path: PathBuf,
    live: Arc<LivePolicy>,
    audit: AuditSink,
    changed: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut last = stamp(&path);
    std::thread::Builder::new()
        .name("toolgate-reload".into())
        .spawn(move || loop {
            toolgate_clock::sleep(POLL);
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match load_policy_file(&path) {
                Ok(policy) => {
                    live.set(Arc::new(policy));
                    audit.log(
                        LogLevel::Warn,
                        &format!("reloaded the policy from {}", path.display()),
                    );
                    changed();
                }
                Err(problems) => audit.log(
                    LogLevel::Error,
                    &format!(
                        "{problems}\nthe edited policy {} is invalid; the previous policy stays in force",
                        path.display()
                    ),
                ),
            }
        })
        .map(|_| ())
}
