//! The agents' credentials: bearer tokens resolved to grants (compared in
//! constant time), and the policy over gateway names that applies to each.

use crate::gateway::Gateway;
use crate::gateway::GrantOptions;
use std::sync::{Arc, RwLock};
use toolgate_policy::Policy;

/// The credentials in force, and the gateway's policy over gateway names
/// (both swapped on reload).
pub(crate) struct Grants {
    pub(crate) list: RwLock<Arc<Vec<Arc<GrantOptions>>>>,
    pub(crate) policy: RwLock<Option<Arc<Policy>>>,
    pub(crate) anonymous: Arc<GrantOptions>,
    /// Started with no grants: every caller is the anonymous grant.
    pub(crate) anonymous_allowed: bool,
}

/// Who is calling: a grant, resolved from the bearer token.
#[derive(Clone)]
pub struct Caller {
    pub grant: Arc<GrantOptions>,
}

impl Gateway {
    pub fn has_grants(&self) -> bool {
        !self.grants.list.read().expect("grants lock").is_empty()
    }

    /// Replaces the grants (rotation, revocation); sessions of a grant that is
    /// gone stop working at their next request.
    pub fn set_grants(&self, grants: Vec<GrantOptions>) {
        *self.grants.list.write().expect("grants lock") =
            Arc::new(grants.into_iter().map(Arc::new).collect());
    }

    /// The caller a bearer token stands for. With no grants configured every
    /// caller is the anonymous grant. Every grant's hash is compared, in
    /// constant time, whatever matches.
    pub fn authenticate(&self, token: Option<&str>) -> Option<Caller> {
        let grants = self.grants.list.read().expect("grants lock").clone();
        // Anonymous callers only for a gateway that started without grants; one
        // whose last grant was revoked by a reload refuses everyone.
        if grants.is_empty() && self.grants.anonymous_allowed {
            return Some(Caller {
                grant: self.grants.anonymous.clone(),
            });
        }
        let token = token?;
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        let mut found = None;
        for grant in grants.iter() {
            let equal: bool =
                subtle::ConstantTimeEq::ct_eq(&grant.token_sha256[..], &hash[..]).into();
            if equal && found.is_none() {
                found = Some(grant.clone());
            }
        }
        found.map(|grant| Caller { grant })
    }

    /// The policy over gateway names for a caller.
    pub(crate) fn gateway_policy(&self, caller: &Caller) -> Option<Arc<Policy>> {
        caller
            .grant
            .policy
            .clone()
            .or_else(|| self.grants.policy.read().expect("policy lock").clone())
    }
}
