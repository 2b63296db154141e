//! Pinned definitions: each listed tool checked against its pin, and the
//! calls of a tool whose definition changed held back.

use super::*;
use toolgate_pins::Finding;

/// Records a listed definition against its pin; false when the tool is to be
/// held back (its definition changed and the policy blocks changed tools).
pub(super) fn pin_allows(
    shared: &Shared,
    policy: &Policy,
    tool: &Value,
    name: &str,
    now: u64,
) -> bool {
    let observed: Result<Observed, _> = shared.pins.observe(&shared.server_name, tool, now);
    shared
        .pin_checked
        .lock()
        .expect("pin lock")
        .insert(name.to_string());
    let mut held_back = shared.held_back.lock().expect("held-back lock");
    let finding = Finding::of(
        observed,
        policy.blocks_changed_tools(),
        shared.pins_fail_open,
    );
    if let Some(line) = finding.warning(&shared.server_name, name, "toolgate pins diff") {
        shared.audit.log(LogLevel::Warn, &line);
    }
    if let Some(line) = finding.error(name) {
        shared.audit.log(LogLevel::Error, &line);
    }
    if let Some(kind) = finding.audit_kind() {
        pin_audit(shared, name, kind);
    }
    if finding == Finding::Clear {
        held_back.remove(name);
    } else if finding.held_back() {
        held_back.insert(name.to_string());
    }
    !finding.held_back()
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
