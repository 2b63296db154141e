//! What an agent can call, and how risky it is.
//!
//! CONTRACT (shared by `toolgate scan`, the recommended policy and, later,
//! the dashboard):
//! - [`classify`] is pure and deterministic: an MCP tool definition (the JSON
//!   object from `tools/list`: name, description, inputSchema, annotations)
//!   gives a [`Classification`]: a [`Category`], a [`Risk`] and the
//!   [`Evidence`] behind them.
//! - Annotations are hints, never trusted alone: where annotations and
//!   wording disagree, the riskier reading wins and the evidence says so.
//! - [`recommend_policy`] turns classified tools into a policy in the seed
//!   format (see `../shared/seeds/`): Read allowed; Write 30 per minute per
//!   grant (`{"counter": "<tool>_rate", "window": "minute", "max": 30,
//!   "scope": "grant"}`); Execute 10 per minute; Destructive
//!   require_approval (hidden with `strict`); Financial require_approval plus
//!   a daily spend limit where an amount argument exists; default deny; a
//!   description per tool saying why.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    Read,
    Write,
    Execute,
    Destructive,
    Financial,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

/// Where a reading comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A tool annotation (readOnlyHint, destructiveHint, ...).
    Annotation,
    /// A verb in the tool's name.
    Name,
    /// A phrase in the description.
    Description,
    /// A field of the input schema (amount, url, path, command, recipient).
    Schema,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub source: Source,
    /// What was found, for a person: `destructiveHint: true`, `verb "delete"`,
    /// `"permanently removes"`, `field "amount"`, or a note that annotations
    /// and wording disagree.
    pub detail: String,
    /// The category this piece points to, if any.
    pub points_to: Option<Category>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub category: Category,
    pub risk: Risk,
    pub evidence: Vec<Evidence>,
}

/// Classifies one tool definition (the object from `tools/list`).
pub fn classify(tool: &Value) -> Classification {
    let _ = tool;
    Classification {
        category: Category::Other,
        risk: Risk::Medium,
        evidence: Vec::new(),
    }
}

/// A recommended policy (a JSON value in the policy format, version "1") for
/// `tools`: (tool name as the policy names it, its definition, its
/// classification). `strict`: Destructive tools are hidden.
pub fn recommend_policy(tools: &[(String, Value, Classification)], strict: bool) -> Value {
    let _ = (tools, strict);
    serde_json::json!({"version": "1", "default": "deny", "tools": {}})
}
