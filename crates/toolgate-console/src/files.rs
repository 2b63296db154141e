//! Policy files: reading one with its validation, the JSON document inside
//! it, rendering a document as JSON or YAML, line diffs, and the atomic
//! save.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use toolgate_policy::document::{self, Node};
use toolgate_policy::{parse_policy, Diagnostic, Format, Policy};

/// The name a file is given in messages: as the backend names it, which is
/// what `toolgate validate` prints for the same path.
pub(crate) fn display(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn format_of(path: &Path) -> Option<Format> {
    Format::from_path(path)
}

pub(crate) fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    }
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A diagnostic as the API sends it: its parts, and the line `toolgate
/// validate` prints for it.
pub(crate) fn diagnostic_json(d: &Diagnostic) -> Value {
    json!({
        "line": d.line,
        "column": d.column,
        "path": d.path,
        "message": d.message,
        "text": d.to_string(),
    })
}

/// The outcome of validating a text as the policy at `path`.
pub(crate) struct Checked {
    pub policy: Option<Policy>,
    pub messages: Vec<Value>,
    pub summary: Option<String>,
}

pub(crate) fn check(text: &str, format: Format, path: &Path) -> Checked {
    let name = display(path);
    match parse_policy(text, format, &name) {
        Ok(policy) => Checked {
            summary: Some(policy.summary(&name)),
            policy: Some(policy),
            messages: Vec::new(),
        },
        Err(diagnostics) => Checked {
            policy: None,
            messages: diagnostics.0.iter().map(diagnostic_json).collect(),
            summary: None,
        },
    }
}

/// The document in a policy text as JSON (key order kept), when the text
/// parses at all (even if it is not a valid policy).
pub(crate) fn document_of(text: &str, format: Format) -> Option<Value> {
    let read = match format {
        Format::Json => document::read_json(text),
        Format::Yaml => document::read_yaml(text, "policy"),
    };
    if !read.errors.is_empty() {
        return None;
    }
    read.root.as_ref().map(node_json)
}

fn node_json(node: &Node) -> Value {
    use toolgate_policy::document::Value as V;
    match &node.value {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Number(n) => Value::Number(n.json().clone()),
        V::String(s) => Value::String(s.clone()),
        V::Array(items) => Value::Array(items.iter().map(node_json).collect()),
        V::Object(members) => {
            let mut map = Map::new();
            for m in members {
                map.insert(m.key.clone(), node_json(&m.value));
            }
            Value::Object(map)
        }
    }
}

/// A document as the text of a policy file in `format`: pretty JSON, or
/// block YAML, each ending with a newline.
pub fn render(document: &Value, format: Format) -> Result<String, String> {
    match format {
        Format::Json => serde_json::to_string_pretty(document)
            .map(|text| text + "\n")
            .map_err(|e| format!("cannot write JSON: {e}")),
        Format::Yaml => toolgate_policy::document::write_yaml(document),
    }
}

/// One line of a diff: `" "` kept, `"-"` removed, `"+"` added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub op: char,
    pub text: String,
}

/// The most files a diff compares line by line (beyond it: all removed,
/// all added).
const MAX_DIFF_CELLS: usize = 4_000_000;

/// A line diff of `old` to `new` (longest common subsequence).
pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let line = |op: char, text: &str| DiffLine {
        op,
        text: text.to_string(),
    };
    if a.len().saturating_mul(b.len()) > MAX_DIFF_CELLS {
        return a
            .iter()
            .map(|t| line('-', t))
            .chain(b.iter().map(|t| line('+', t)))
            .collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let width = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * width + j] = if a[i] == b[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[(i + 1) * width + j] >= lcs[i * width + j + 1] {
            out.push(line('-', a[i]));
            i += 1;
        } else {
            out.push(line('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|t| line('-', t)));
    out.extend(b[j..].iter().map(|t| line('+', t)));
    out
}

pub(crate) fn diff_json(old: &str, new: &str) -> Value {
    Value::Array(
        diff_lines(old, new)
            .into_iter()
            .map(|d| json!({"op": d.op.to_string(), "text": d.text}))
            .collect(),
    )
}

/// Writes `text` to `path` through a temporary file in the same directory
/// and a rename, so that a reader sees the old file or the new one, never
/// a part. The file keeps its permissions.
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    // A symbolic link is followed: its target is replaced, the link stays.
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let path = resolved.as_path();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let temp: PathBuf = dir.join(format!(".{name}.{}.toolgate-save", hex::encode(random)));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&temp, meta.permissions())?;
        }
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_keep_common_lines() {
        let d = diff_lines("a\nb\nc\n", "a\nx\nc\nd\n");
        let ops: Vec<(char, &str)> = d.iter().map(|l| (l.op, l.text.as_str())).collect();
        assert_eq!(
            ops,
            [(' ', "a"), ('-', "b"), ('+', "x"), (' ', "c"), ('+', "d")]
        );
        assert!(diff_lines("same\n", "same\n").iter().all(|l| l.op == ' '));
        assert_eq!(diff_lines("", "new").len(), 1);
    }

    #[test]
    fn rendered_documents_are_valid_policies_in_both_formats() {
        let document = json!({
            "version": "1",
            "default": "deny",
            "tools": {
                "send_text": {"limits": [{"counter": "send_text_rate", "window": "minute", "max": 30, "scope": "grant"}]},
                "delete_all": {"action": "deny", "reason": "no: \"never\""},
                "cost": {"limits": [{"counter": "c", "window": 60, "max": 2.5}]},
                "t": {"conditions": [{"path": "args.to", "op": "in", "value": ["1", true, null]}]}
            }
        });
        for format in [Format::Json, Format::Yaml] {
            let text = render(&document, format).unwrap();
            assert!(text.ends_with('\n'));
            parse_policy(&text, format, "p").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(document_of(&text, format).unwrap(), document, "{text}");
        }
    }

    #[test]
    fn the_atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_link_keeps_pointing_at_the_saved_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        let link = dir.path().join("p.json");
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, "new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }
}
