//! Pinned tool definitions: each listed tool checked against its pin, and
//! the tools held back because their definition changed since.

use crate::gateway::Gateway;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use toolgate_audit::{LogLevel, Record};
use toolgate_pins::Finding;
use toolgate_policy::Policy;

/// The pin store, and the tools held back because their definition changed
/// since it was pinned: (server index, the server's own tool name).
pub(crate) struct Pins {
    pub(crate) store: Arc<dyn toolgate_pins::PinStore>,
    /// While the pin store cannot be reached: hold tools back (false) or not.
    pub(crate) fail_open: bool,
    pub(crate) held_back: RwLock<std::collections::HashSet<(usize, String)>>,
}

impl Gateway {
    /// Records each listed definition against its pin, and holds back the
    /// tools whose definition changed (unless every policy that applies says
    /// `pins.on_change: warn`).
    pub(crate) fn check_pins(&self, index: usize, tools: &[Value]) {
        let server = &self.servers[index];
        let mut policies: Vec<Arc<Policy>> = [
            self.grants.policy.read().expect("policy lock").clone(),
            self.server_policy(index),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Every grant's own policy counts too: one that blocks changed tools wins.
        policies.extend(
            self.grants
                .list
                .read()
                .expect("grants lock")
                .iter()
                .filter_map(|g| g.policy.clone()),
        );
        let block = policies.is_empty() || policies.iter().any(|p| p.blocks_changed_tools());
        let now = self.clock.now_ms();
        let mut held = self.pins.held_back.write().expect("held-back lock");
        held.retain(|(i, _)| *i != index);
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let finding = Finding::of(
                self.pins.store.observe(&server.name, tool, now),
                block,
                self.pins.fail_open,
            );
            let diff = format!("toolgate pins diff {}/{name}", server.name);
            if let Some(line) = finding.warning(&server.name, name, &diff) {
                self.audit.log(LogLevel::Warn, &line);
            }
            if let Some(line) = finding.error(name) {
                self.audit.log(LogLevel::Error, &line);
            }
            if let (Some(kind), true) = (finding.audit_kind(), self.audit.enabled()) {
                self.audit.record(Record::pin_changed(
                    now,
                    (String::new(), String::new()),
                    &server.name,
                    name,
                    kind,
                ));
            }
            if finding.held_back() {
                held.insert((index, name.to_string()));
            }
        }
    }

    pub(crate) fn is_held_back(&self, server: usize, original: &str) -> bool {
        let key = (server, original.to_string());
        if !self
            .pins
            .held_back
            .read()
            .expect("held-back lock")
            .contains(&key)
        {
            return false;
        }
        // Accepted since (`toolgate pins accept`, perhaps on another machine)?
        let name = &self.servers[server].name;
        match self.pins.store.get(name, original) {
            Ok(Some(pin)) if !pin.is_changed() => {
                self.pins
                    .held_back
                    .write()
                    .expect("held-back lock")
                    .remove(&key);
                self.broadcast_list_changed();
                false
            }
            _ => true,
        }
    }
}
