//! The stores a gateway keeps its state in: counters, approvals, pins,
//! ended sessions and the audit trail's directory, each opened from one
//! [`StateConfig`] (`--state embedded`, the default: databases in the data
//! directory; `--state memory`; `--state redis://HOST:PORT/DB`), the same
//! choices as the config file's `state` section.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toolgate_config::{StateConfig, StateStore};
use toolgate_policy::{CounterStore, FailMode, MemoryStore};

/// What the user asked of the state on the command line (each `None`:
/// not given, the config's or the default applies).
#[derive(Debug, Clone, Default)]
pub struct StateFlags {
    /// `--state`: embedded, memory or redis://HOST:PORT/DB.
    pub state: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub state_fail: Option<FailMode>,
    pub state_prefix: Option<String>,
}

impl StateFlags {
    /// The state settings: the flags given, else the config's, else the defaults.
    pub fn resolve(&self, config: Option<&StateConfig>) -> Result<StateConfig> {
        let mut state = config.cloned().unwrap_or_default();
        if let Some(store) = &self.state {
            state.store = match store.as_str() {
                "embedded" => StateStore::Embedded,
                "memory" => StateStore::Memory,
                url if url.starts_with("redis://") => StateStore::Redis(url.to_string()),
                other => anyhow::bail!(
                    "--state {other:?}: expected embedded, memory or redis://HOST:PORT/DB"
                ),
            };
        }
        if let Some(dir) = &self.data_dir {
            state.data_dir = Some(dir.clone());
        }
        if let Some(fail) = self.state_fail {
            state.fail = fail;
        }
        if let Some(prefix) = &self.state_prefix {
            state.prefix = prefix.clone();
        }
        Ok(state)
    }
}

/// The data directory a state config points at.
pub fn data_dir(state: &StateConfig) -> PathBuf {
    state
        .data_dir
        .clone()
        .unwrap_or_else(toolgate_audit_store::default_data_dir)
}

/// Opens the counter store.
pub fn open_store(state: &StateConfig) -> Result<Arc<dyn CounterStore>> {
    Ok(match &state.store {
        StateStore::Memory => Arc::new(MemoryStore::new()),
        StateStore::Embedded => {
            let dir = data_dir(state);
            Arc::new(
                toolgate_state_sqlite::SqliteStore::open(&dir, state.fail).with_context(|| {
                    format!("cannot open the embedded store in {}", dir.display())
                })?,
            )
        }
        StateStore::Redis(url) => Arc::new(
            toolgate_state_redis::RedisStore::connect(url, &state.prefix, state.fail)
                .with_context(|| format!("cannot use the Redis store {url}"))?,
        ),
    })
}

/// Where the audit trail is kept: the data directory, also when counters are
/// in Redis (each machine keeps the trail of its own decisions); none with
/// `--state memory`.
pub fn audit_dir(state: &StateConfig) -> Option<PathBuf> {
    match state.store {
        StateStore::Embedded | StateStore::Redis(_) => Some(data_dir(state)),
        StateStore::Memory => None,
    }
}

/// Opens the approval store that goes with the counter store: in memory,
/// `approvals.db` in the data directory, or Redis under the state prefix.
pub fn open_approvals(state: &StateConfig) -> Result<Arc<dyn toolgate_approvals::ApprovalStore>> {
    open_beside_counters::<dyn toolgate_approvals::ApprovalStore>(
        state,
        "approval store",
        || Arc::new(toolgate_approvals::MemoryApprovals::new()),
        |dir| Ok(Arc::new(toolgate_state_sqlite::SqliteApprovals::open(dir)?)),
        |url, prefix| {
            Ok(Arc::new(toolgate_state_redis::RedisApprovals::connect(
                url, prefix,
            )?))
        },
    )
}

/// Opens the pin store that goes with the state (pinned tool definitions):
/// in memory, `pins.db` in the data directory, or Redis under the state prefix.
pub fn open_pins(state: &StateConfig) -> Result<Arc<dyn toolgate_pins::PinStore>> {
    open_beside_counters::<dyn toolgate_pins::PinStore>(
        state,
        "pin store",
        || Arc::new(toolgate_pins::MemoryPins::new()),
        |dir| Ok(Arc::new(toolgate_state_sqlite::SqlitePins::open(dir)?)),
        |url, prefix| {
            Ok(Arc::new(toolgate_state_redis::RedisPins::connect(
                url, prefix,
            )?))
        },
    )
}

/// Opens the store of ended sessions that goes with the state: in memory,
/// `revocations.db` in the data directory, or Redis under the state prefix.
/// Checks that cannot reach it refuse the request (fail closed, whatever
/// `--state-fail` says: that flag is about counters).
pub fn open_revocations(
    state: &StateConfig,
) -> Result<Arc<dyn toolgate_revocations::RevocationStore>> {
    open_beside_counters::<dyn toolgate_revocations::RevocationStore>(
        state,
        "session store",
        || Arc::new(toolgate_revocations::MemoryRevocations::new()),
        |dir| {
            Ok(Arc::new(toolgate_state_sqlite::SqliteRevocations::open(
                dir,
            )?))
        },
        |url, prefix| {
            Ok(Arc::new(toolgate_state_redis::RedisRevocations::connect(
                url, prefix,
            )?))
        },
    )
}

/// One store of the state where the counters are: `memory()` for `--state
/// memory`, `embedded(data dir)` or `redis(url, prefix)`; an error names
/// the store (`what`) and where it was looked for.
fn open_beside_counters<T: ?Sized>(
    state: &StateConfig,
    what: &str,
    memory: impl FnOnce() -> Arc<T>,
    embedded: impl FnOnce(&Path) -> Result<Arc<T>>,
    redis: impl FnOnce(&str, &str) -> Result<Arc<T>>,
) -> Result<Arc<T>> {
    Ok(match &state.store {
        StateStore::Memory => memory(),
        StateStore::Embedded => {
            let dir = data_dir(state);
            embedded(&dir)
                .with_context(|| format!("cannot open the {what} in {}", dir.display()))?
        }
        StateStore::Redis(url) => redis(url, &state.prefix)
            .with_context(|| format!("cannot use the Redis {what} {url}"))?,
    })
}
