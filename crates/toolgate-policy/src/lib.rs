//! toolgate's policy: the policy language and the pure policy engine.
//!
//! A tour of the crate:
//!
//! - [`parse_policy`] reads a policy (JSON or YAML) and validates it,
//!   reporting every problem at once with file, line, column and document
//!   path ([`Diagnostics`]). Reading is in `json` / `yaml` (both produce the
//!   spanned tree of `tree`), validation in `load`.
//! - [`Policy::evaluate`] is the pure step: which rule applies to a call
//!   (exact name, then the most specific pattern, then the default), whether
//!   its conditions hold (`condition`), and which limits the call must draw
//!   on ([`Draw`]).
//! - [`Policy::decide`] adds the one stateful step: drawing on a
//!   [`CounterStore`] all-or-nothing. [`MemoryStore`] is the in-memory store;
//!   each counter key is a bounded sliding log ([`window`], public with its
//!   stored form, so the embedded store keeps the very same log), and
//!   [`check_draws`] is the check every store makes before it takes.
//!
//! - [`document`] exposes the spanned readers and tree to other crates that
//!   read their own files the same way (toolgate-config); [`check`] the
//!   checks validators of that tree make, and [`duration`] the one grammar
//!   of durations written in a document.
//!
//! Invariants: no IO (the caller passes the text and the clock), no async,
//! no threads. A refusal is a value ([`Decision`]), not an error.

#![forbid(unsafe_code)]

pub mod check;
mod condition;
mod decimal;
pub mod duration;
mod glob;
mod json;
pub mod lease;
mod load;
mod policy;
mod store;
pub mod suite;
mod tree;
pub mod window;
mod yaml;

use std::fmt;

/// The spanned document tree and its readers, for crates that read their own
/// files with the same positions, messages and duplicate-key refusal as
/// policies (the gateway config).
pub mod document {
    pub use crate::tree::{
        dedup_tree, push_index, push_key, quote, Kind, Member, Node, Number, Pos, Problem, Read,
        Value,
    };

    /// Reads strict JSON (duplicate keys are reported in `Read::errors`).
    pub fn read_json(source: &str) -> Read {
        crate::json::read(source)
    }

    /// Reads one YAML document; `what` names the kind of file in messages
    /// ("YAML anchors are not supported in a config").
    pub fn read_yaml(source: &str, what: &'static str) -> Read {
        crate::yaml::read_as(source, what)
    }

    /// Writes a JSON value as a block-style YAML document (the format
    /// `toolgate scan --write-policy` and the dashboard save policies in).
    pub fn write_yaml(value: &serde_json::Value) -> Result<String, String> {
        crate::yaml::write(value)
    }
}

pub use policy::{
    decide_layers, plan_layers, Approval, Call, Decision, DefaultAction, Draw, Evaluation, Layer,
    Plan, Planned, Policy, RuleRef,
};
pub use store::{
    check_draws, BoxFuture, CounterStore, Exhausted, FailMode, Grant, MemoryStore, Refusal, Taken,
};

/// Milliseconds since the Unix epoch, passed in by the caller (a clock).
pub type Millis = u64;
/// A window length in milliseconds.
pub type WindowMs = u64;

/// The syntax a policy is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `.json` → Json, `.yaml` / `.yml` → Yaml, anything else → None.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, counted in characters.
    pub column: usize,
    /// Where in the document: `tools.send_text.limits[0].window`, or ""
    /// for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a policy file, in the order they appear in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Reads and validates a policy. `file` is only used for messages.
pub fn parse_policy(source: &str, format: Format, file: &str) -> Result<Policy, Diagnostics> {
    let read = match format {
        Format::Json => json::read(source),
        Format::Yaml => yaml::read(source),
    };
    let mut problems = read.errors;
    let policy = match &read.root {
        Some(root) => match load::load(root) {
            Ok(policy) => Some(policy),
            Err(found) => {
                problems.extend(found);
                None
            }
        },
        None => None,
    };
    match policy {
        Some(policy) if problems.is_empty() => Ok(policy),
        _ => {
            problems.sort_by_key(|p| p.pos);
            Err(Diagnostics(
                problems
                    .into_iter()
                    .map(|p| Diagnostic {
                        file: file.to_string(),
                        line: p.pos.line,
                        column: p.pos.column,
                        path: p.path,
                        message: p.message,
                    })
                    .collect(),
            ))
        }
    }
}

/// The policy's JSON Schema (draft 2020-12), as a JSON string.
pub fn json_schema() -> &'static str {
    include_str!("schema.json")
}
