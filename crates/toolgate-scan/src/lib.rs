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

//!
//! # Categories
//!
//! What a careful person means by each category, and what the labelled set in
//! `data/labelled-tools.jsonl` follows:
//!
//! - **Read**: looks at state and changes nothing anywhere: get, list,
//!   search, query (read-only SQL included), fetch a page, take a
//!   screenshot, navigate a browser to a URL. Reading secrets or the open
//!   web is still Read, at medium risk.
//! - **Write**: creates or changes state in a way that can be changed back:
//!   create, update, edit, send a message, post a comment, push a commit,
//!   merge, move, rename, click or type into a page. Overwriting a file is
//!   Write at high risk (the tool's purpose is to write, not to remove).
//! - **Execute**: runs code, commands, scripts, workflows or deployments
//!   whose effect is open-ended: run, exec, eval, shell, invoke, deploy,
//!   evaluate a script in a page, execute arbitrary SQL.
//! - **Destructive**: the purpose is to remove data or access, or the
//!   effect is irreversible: delete, remove, drop, purge, truncate, wipe,
//!   revoke, force-push, reset, archive/trash, kill a process.
//! - **Financial**: moves money or commits someone to pay: payments,
//!   transfers, charges, refunds, invoices, payouts, purchases, orders,
//!   trades, subscriptions. Reading financial data (list invoices, get a
//!   balance) is Read.
//! - **Other**: none of these: pure computation, thinking aids, echo,
//!   waiting, changing only the agent's own session (resize a window, pick
//!   a tab).
//!
//! # Rules
//!
//! Readings, each recorded as [`Evidence`]:
//! 1. the name's leading verb (`words` splits snake, kebab, camel case and
//!    namespaces; the first word that is a known verb leads, and a verb after
//!    `and`/`or` joins it: `create_or_update_file`, `search_and_replace`);
//!    a Write verb with a money noun (`create_refund`) is Financial; the
//!    ambiguous money verbs (transfer, order, trade, ...) are Financial only
//!    with money context (an amount or currency field, money words);
//! 2. the description's leading verb, used when the name has none;
//! 3. phrases in the description: irreversible wording ("permanently",
//!    "cannot be undone") points to Destructive; "executes arbitrary",
//!    "shell command" to Execute; "charges the card", "transfer funds" to
//!    Financial;
//! 4. the input schema: amount/price/currency fields make a writing tool
//!    Financial; command/script/code fields make a tool without a verb
//!    Execute; url fields mean the open world, path fields the file system,
//!    recipient fields communication;
//! 5. annotations (hints, never trusted alone): readOnlyHint and
//!    destructiveHint decide only when the wording says nothing; where they
//!    disagree with the wording, the riskier reading wins and the evidence
//!    says so.
//!
//! Risk: Read low (medium when it reaches the open web or reads secrets);
//! Other low; Write medium (high when it overwrites, is flagged
//! destructiveHint, or acts in bulk); Execute high; Destructive high
//! (critical when worded as irreversible or acting on a whole store: all,
//! bulk, database, repository, ...); Financial critical. A Destructive or
//! Financial reading never ends as Read.

mod policy;
mod rules;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod classify;

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
    classify::classify(tool)
}

/// A recommended policy (a JSON value in the policy format, version "1") for
/// `tools`: (tool name as the policy names it, its definition, its
/// classification). `strict`: Destructive tools are hidden.
pub fn recommend_policy(tools: &[(String, Value, Classification)], strict: bool) -> Value {
    policy::recommend_policy(tools, strict)
}
