//! toolgate's gateway config: the file `toolgate serve --config FILE` reads.
//!
//! A tour of the crate:
//!
//! - [`load_config`] / [`parse_config`] read a config (YAML, TOML or JSON)
//!   and validate it into a [`Config`], reporting every problem at once with
//!   file, line, column and document path, in the same [`Diagnostics`] as
//!   policies. Reading is in `read` (YAML and JSON through the policy crate's
//!   spanned readers, TOML through `toml_edit`, all into one spanned tree);
//!   validation is in `validate`, with the small value grammars (durations,
//!   byte sizes, `${VAR}` interpolation, names, origins) in `values`.
//! - `config` holds the validated types: they cannot hold a half-valid value,
//!   and secrets ([`Secret`]) never show in `Debug`.
//! - `token` makes grant tokens ([`new_token`]) and their hashes
//!   ([`hash_token`]); a config holds only hashes.
//!
//! Invariants: the environment comes in as an argument (`env`), never from
//! `std::env`, so tests never touch the real one. The only IO is reading the
//! config file and the policy files it names (in [`load_config`] and
//! [`parse_config`]). A variable that is not set, a server with no policy,
//! an open listen address without grants: each is an error (fail closed).

#![forbid(unsafe_code)]

mod config;
mod read;
mod token;
mod validate;
mod values;

use std::path::Path;

pub use config::{
    AdminConfig, Config, GrantConfig, HttpConfig, LoadedPolicy, OtlpConfig, OtlpProtocol, Secret,
    ServerConfig, ServerTransport, StateConfig, StateStore, TelemetryConfig, UpstreamProtocol,
    WebhookConfig,
};
pub use token::{hash_token, new_token};
pub use toolgate_policy::{Diagnostic, Diagnostics};

/// The syntax a config is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Yaml,
    Toml,
    Json,
}

impl ConfigFormat {
    /// `.yaml` / `.yml` → Yaml, `.toml` → Toml, `.json` → Json, anything else → None.
    pub fn from_path(path: &Path) -> Option<ConfigFormat> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(ConfigFormat::Yaml),
            "toml" => Some(ConfigFormat::Toml),
            "json" => Some(ConfigFormat::Json),
            _ => None,
        }
    }
}

/// Reads and validates the config file at `path` and the policy files it
/// names (relative to the config file's directory). `env` answers
/// `${VAR}` references and the session key variable.
pub fn load_config(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Diagnostics> {
    let file = path.display().to_string();
    let fail = |message: String| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            column: 1,
            path: String::new(),
            message,
        }])
    };
    let format = ConfigFormat::from_path(path).ok_or_else(|| {
        fail("unknown config format (use .yaml, .yml, .toml or .json)".to_string())
    })?;
    let source =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the config: {e}")))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_config(&source, format, &file, base_dir, env)
}

/// Reads and validates a config from text. `file` is only used for
/// messages; relative paths in the config (policies, `cwd`) are resolved
/// against `base_dir`, and the policy files are read from disk.
pub fn parse_config(
    source: &str,
    format: ConfigFormat,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Diagnostics> {
    validate::parse(source, format, file, base_dir, env, &|path: &Path| {
        std::fs::read_to_string(path)
    })
}

/// A cheap guess used by `toolgate validate`: true when the document's top
/// level has `servers` and no `version` (a config rather than a policy).
/// Works on YAML, JSON and TOML text, and on text with syntax errors (by
/// looking for a top-level `servers` line).
pub fn is_config_document(source: &str) -> bool {
    match read::top_level_keys(source) {
        Some(keys) => keys.iter().any(|k| k == "servers") && !keys.iter().any(|k| k == "version"),
        None => {
            let starts = |prefixes: &[&str]| {
                source.lines().any(|line| {
                    let line = line.trim_end();
                    prefixes.iter().any(|p| line.starts_with(p))
                })
            };
            starts(&[
                "servers:",
                "servers :",
                "[servers",
                "servers =",
                "servers=",
                "\"servers\"",
            ]) && !starts(&["version:", "version =", "\"version\""])
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
