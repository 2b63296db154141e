//! The hash chain that links the records.

use serde_json::Value;
use sha2::{Digest, Sha256};
use toolgate_jsonrpc::canonical_json;

/// The `prev_hash` of the first record ever appended: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `sha256(prev_hash || canonical JSON of the record)`, in lower-case hex;
/// `prev_hash` is hashed as its hex text.
pub fn chain_hash(prev_hash: &str, record: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical_json(record).as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_is_of_the_previous_hash_and_the_canonical_record() {
        let record = json!({"tool": "t", "grant": "g"});
        let expected = hex::encode(Sha256::digest(
            format!("{GENESIS_HASH}{{\"grant\":\"g\",\"tool\":\"t\"}}").as_bytes(),
        ));
        assert_eq!(chain_hash(GENESIS_HASH, &record), expected);
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"y":2,"x":1}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":[1,{"x":1,"y":2}],"a":1}"#).unwrap();
        assert_eq!(chain_hash("p", &a), chain_hash("p", &b));
        assert_ne!(chain_hash("p", &a), chain_hash("q", &a));
    }
}
