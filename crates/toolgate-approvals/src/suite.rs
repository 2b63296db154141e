//! One behavioural suite for every [`ApprovalStore`] (memory here; the
//! embedded and Redis stores in their crates). `make` gives a fresh, empty
//! store each time; a failed check panics naming what failed.

use crate::{ApprovalError, ApprovalStore, Decided, NewRequest, Status, Via};
use serde_json::json;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

fn new(tool: &str, amount: u64) -> NewRequest {
    NewRequest {
        grant: "alice".into(),
        server: Some("bank".into()),
        tool: tool.into(),
        arguments: json!({"amount": amount, "to": "bob"}),
        reason: "transfers need approval".into(),
        rule: "tools[\"transfer\"]".into(),
        expires_in_ms: 60_000,
    }
}

fn by(via: Via) -> Decided {
    Decided {
        by: "carol".into(),
        via,
        at_ms: T0 + 1,
        reason: None,
    }
}

pub fn run_all(make: &dyn Fn() -> Arc<dyn ApprovalStore>) {
    the_same_call_maps_to_one_live_request(make());
    approve_then_consume_exactly_once(make());
    deny_is_final(make());
    deciding_twice_unknown_or_expired_is_an_error(make());
    expired_approvals_are_not_consumed(make());
    list_shows_pending_newest_first(make());
    concurrent_consumers_run_the_call_once(make);
}

pub fn the_same_call_maps_to_one_live_request(store: Arc<dyn ApprovalStore>) {
    let a = store.request(&new("transfer", 500), T0).unwrap();
    let b = store.request(&new("transfer", 500), T0 + 10).unwrap();
    assert_eq!(
        a.id, b.id,
        "an identical call while pending is the same request"
    );
    let c = store.request(&new("transfer", 501), T0 + 10).unwrap();
    assert_ne!(a.id, c.id, "other arguments, another request");
    assert!(a.id.starts_with("apr_"));
    assert_eq!(a.status, Status::Pending);
    assert_eq!(a.expires_ms, T0 + 60_000);
    assert_eq!(store.get(&a.id).unwrap().unwrap().tool, "transfer");
    assert!(store.get("apr_0000000000000000").unwrap().is_none());
}

pub fn approve_then_consume_exactly_once(store: Arc<dyn ApprovalStore>) {
    let r = store.request(&new("transfer", 1), T0).unwrap();
    assert!(
        store.consume(&r.key, T0 + 1).unwrap().is_none(),
        "pending is not consumable"
    );
    let approved = store.decide(&r.id, true, by(Via::Cli), T0 + 2).unwrap();
    assert!(
        matches!(approved.status, Status::Approved(ref d) if d.via == Via::Cli && d.by == "carol")
    );
    // While approved and unused, the identical call finds the same request.
    assert_eq!(store.request(&new("transfer", 1), T0 + 3).unwrap().id, r.id);
    let used = store
        .consume(&r.key, T0 + 4)
        .unwrap()
        .expect("approved call consumed");
    assert!(matches!(used.status, Status::Used { used_at_ms, .. } if used_at_ms == T0 + 4));
    assert!(
        store.consume(&r.key, T0 + 5).unwrap().is_none(),
        "an approval runs one call"
    );
    // After use, the identical call needs a new approval.
    assert_ne!(store.request(&new("transfer", 1), T0 + 6).unwrap().id, r.id);
}

pub fn deny_is_final(store: Arc<dyn ApprovalStore>) {
    let r = store.request(&new("transfer", 2), T0).unwrap();
    let denied = store
        .decide(
            &r.id,
            false,
            Decided {
                reason: Some("not today".into()),
                ..by(Via::Api)
            },
            T0 + 1,
        )
        .unwrap();
    assert!(
        matches!(denied.status, Status::Denied(ref d) if d.reason.as_deref() == Some("not today"))
    );
    assert!(store.consume(&r.key, T0 + 2).unwrap().is_none());
}

pub fn deciding_twice_unknown_or_expired_is_an_error(store: Arc<dyn ApprovalStore>) {
    let r = store.request(&new("transfer", 3), T0).unwrap();
    store.decide(&r.id, true, by(Via::Cli), T0 + 1).unwrap();
    assert!(matches!(
        store.decide(&r.id, false, by(Via::Api), T0 + 2),
        Err(ApprovalError::AlreadyDecided {
            status: "approved",
            ..
        })
    ));
    assert!(matches!(
        store.decide("apr_ffffffffffffffff", true, by(Via::Cli), T0),
        Err(ApprovalError::Unknown(_))
    ));
    let late = store.request(&new("transfer", 4), T0).unwrap();
    assert!(matches!(
        store.decide(&late.id, true, by(Via::Cli), T0 + 60_000),
        Err(ApprovalError::Expired(_))
    ));
}

pub fn expired_approvals_are_not_consumed(store: Arc<dyn ApprovalStore>) {
    let r = store.request(&new("transfer", 5), T0).unwrap();
    store.decide(&r.id, true, by(Via::Cli), T0 + 1).unwrap();
    assert!(store.consume(&r.key, T0 + 60_000).unwrap().is_none());
    // And an expired request is not the live one: a new request is made.
    assert_ne!(
        store.request(&new("transfer", 5), T0 + 60_001).unwrap().id,
        r.id
    );
}

pub fn list_shows_pending_newest_first(store: Arc<dyn ApprovalStore>) {
    let a = store.request(&new("a", 1), T0).unwrap();
    let b = store.request(&new("b", 1), T0 + 1).unwrap();
    let c = store.request(&new("c", 1), T0 + 2).unwrap();
    store.decide(&b.id, false, by(Via::Cli), T0 + 3).unwrap();
    let pending: Vec<String> = store
        .list(true, T0 + 4)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, vec![c.id.clone(), a.id.clone()]);
    assert_eq!(store.list(false, T0 + 4).unwrap().len(), 3);
    assert!(
        store.list(true, T0 + 60_003).unwrap().is_empty(),
        "expired requests are not pending"
    );
}

/// 8 threads race to consume one approval: exactly one wins.
pub fn concurrent_consumers_run_the_call_once(make: &dyn Fn() -> Arc<dyn ApprovalStore>) {
    let store = make();
    let r = store.request(&new("transfer", 9), T0).unwrap();
    store.decide(&r.id, true, by(Via::Cli), T0 + 1).unwrap();
    let winners: usize = (0..8)
        .map(|_| {
            let store = store.clone();
            let key = r.key.clone();
            std::thread::spawn(move || store.consume(&key, T0 + 2).unwrap().is_some() as usize)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(winners, 1);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memory_store_passes_the_suite() {
        super::run_all(&|| std::sync::Arc::new(crate::MemoryApprovals::new()));
    }
}
