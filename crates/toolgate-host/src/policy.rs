//! Reading a policy file for the commands that start from one.

use anyhow::{Context, Result};
use std::path::Path;
use toolgate_policy::{parse_policy, Format, Policy};

/// Reads and validates a policy file; the error text is every diagnostic, one per line.
pub fn load_policy(path: &Path) -> Result<Policy> {
    let format = Format::from_path(path).with_context(|| {
        format!(
            "{}: unknown policy format (use .json, .yaml or .yml)",
            path.display()
        )
    })?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_policy(&text, format, &path.display().to_string()).map_err(|d| anyhow::anyhow!("{d}"))
}
