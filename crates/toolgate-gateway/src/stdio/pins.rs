//! Pinned definitions: each listed tool checked against its pin, and the
//! calls of a tool whose definition changed held back.

use super::*;

/// Records a listed definition against its pin; false when the tool is to be
/// held back (its definition changed and the policy blocks changed tools).
pub(super) fn pin_allows(
    shared: &Shared,
    policy: &Policy,
    tool: &Value,
    name: &str,
    now: u64,
) -> bool {
    let observed = shared.pins.observe(&shared.server_name, tool, now);
    shared
        .pin_checked
        .lock()
        .expect("pin lock")
        .insert(name.to_string());
    let mut held_back = shared.held_back.lock().expect("held-back lock");
    match observed {
        Ok(Observed::New | Observed::Same) => {
            held_back.remove(name);
            true
        }
        Ok(Observed::Changed { first }) => {
            let block = policy.blocks_changed_tools();
            if first {
                let what = if block {
                    "held back until the change is accepted"
                } else {
                    "allowed (pins.on_change: warn)"
                };
                shared.audit.log(
                    LogLevel::Warn,
                    &format!("tool {name:?} of server {:?} changed its definition since it was pinned: {what} (toolgate pins diff)", shared.server_name),
                );
                pin_audit(
                    shared,
                    name,
                    if block {
                        "pin_changed"
                    } else {
                        "pin_changed_warn"
                    },
                );
            }
            if block {
                held_back.insert(name.to_string());
            }
            !block
        }
        Err(_) if shared.pins_fail_open => true,
        Err(e) => {
            // Fail closed: a definition that cannot be checked is held back.
            shared.audit.log(
                LogLevel::Error,
                &format!("pins: {e}; tool {name:?} is held back"),
            );
            held_back.insert(name.to_string());
            false
        }
    }
}

/// Whether a tool is held back for a changed definition; one that has been
/// accepted since (`toolgate pins accept`) is released.
/// What the pin of a tool says about a call to it.
pub(super) enum PinCheck {
    Clear,
    /// The definition changed and the policy blocks changed tools.
    Changed,
    /// The pin store cannot be reached (and the fail mode is closed).
    Unavailable(String),
}

pub(super) fn pin_check(shared: &Shared, tool: &str) -> PinCheck {
    let listed_here = shared.pin_checked.lock().expect("pin lock").contains(tool);
    let held = shared
        .held_back
        .lock()
        .expect("held-back lock")
        .contains(tool);
    if listed_here && !held {
        return PinCheck::Clear;
    }
    // Held back, or never listed by this process (a call before any
    // tools/list): the store knows whether the definition changed.
    let verdict = match shared.pins.get(&shared.server_name, tool) {
        Ok(Some(pin)) if pin.is_changed() && shared.policy.get().blocks_changed_tools() => {
            PinCheck::Changed
        }
        Ok(_) => PinCheck::Clear,
        Err(_) if shared.pins_fail_open => return PinCheck::Clear,
        Err(e) => return PinCheck::Unavailable(e.to_string()),
    };
    let mut held_back = shared.held_back.lock().expect("held-back lock");
    match verdict {
        PinCheck::Changed => {
            held_back.insert(tool.to_string());
        }
        _ => {
            held_back.remove(tool);
            shared
                .pin_checked
                .lock()
                .expect("pin lock")
                .insert(tool.to_string());
        }
    }
    verdict
}

pub(super) fn pin_audit(shared: &Shared, tool: &str, kind: &'static str) {
    if !shared.audit.enabled() {
        return;
    }
    shared.audit.record(Record::pin_changed(
        shared.clock.now_ms(),
        (shared.grant.clone(), shared.session.clone()),
        &shared.server_name,
        tool,
        kind,
    ));
}
