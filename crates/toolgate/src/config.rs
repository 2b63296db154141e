//! `toolgate validate` for gateway configs: telling a config from a policy,
//! and checking it (with the real environment) in the same message style.

use std::path::Path;

/// A `.toml` file, or any file whose top level has `servers` and no `version`.
pub fn is_config_file(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "toml") {
        return true;
    }
    std::fs::read_to_string(path).is_ok_and(|text| toolgate_config::is_config_document(&text))
}

/// Prints a one-line summary, or every diagnostic on stderr; true when valid.
pub fn validate(path: &Path) -> bool {
    match toolgate_config::load_config(path, &toolgate_host::process_env) {
        Ok(config) => {
            let plural = |n: usize, one: &str, many: &str| {
                format!("{n} {}", if n == 1 { one } else { many })
            };
            println!(
                "{}: valid config ({}, {}, listen {})",
                path.display(),
                plural(config.servers.len(), "server", "servers"),
                plural(config.grants.len(), "grant", "grants"),
                config.listen
            );
            true
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            false
        }
    }
}
