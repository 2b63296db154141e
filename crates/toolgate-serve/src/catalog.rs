//! The merged catalogue: the tools, prompts, resources and resource
//! templates of every server, under the names clients see.
//!
//! A server with a prefix has its tools and prompts renamed
//! `PREFIX SEPARATOR NAME` (`everything__echo`); a server without one keeps
//! its own names. Resources keep their URIs (they are already global) and
//! are routed by the server that listed them. Two servers offering the same
//! gateway name is a conflict: the name goes to the server listed first in
//! the config, and the conflict is reported (at start-up it is an error).
//! `Lists` holds each server's lists as last fetched and the catalogue
//! merged from them.

use serde_json::Value;
// foldhash (keyed per process): these maps are looked up on every call.
use foldhash::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// One server's lists as it last answered them (`None` while it is down).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerLists {
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
}

/// How one server's names map into the gateway's.
#[derive(Debug, Clone)]
pub struct Naming {
    pub server: String,
    pub prefix: Option<String>,
}

/// A tool or prompt under its gateway name.
#[derive(Debug, Clone)]
pub struct Entry {
    pub server: usize,
    pub original: String,
    /// The definition as the client sees it (name rewritten).
    pub value: Value,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub tools: Vec<Entry>,
    tool_index: HashMap<String, usize>,
    pub prompts: Vec<Entry>,
    prompt_index: HashMap<String, usize>,
    pub resources: Vec<(usize, Value)>,
    resource_index: HashMap<String, usize>,
    pub templates: Vec<(usize, Value)>,
    /// Human-readable descriptions of every name conflict.
    pub conflicts: Vec<String>,
}

/// MCP tool names: 1 to 128 of `A-Z a-z 0-9 _ - .`.
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub fn gateway_name(prefix: Option<&str>, separator: &str, name: &str) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}{separator}{name}"),
        None => name.to_string(),
    }
}

impl Catalog {
    pub fn build(naming: &[Naming], lists: &[Option<ServerLists>], separator: &str) -> Catalog {
        let mut catalog = Catalog::default();
        for (server, lists) in lists.iter().enumerate() {
            let Some(lists) = lists else { continue };
            let prefix = naming[server].prefix.as_deref();
            for (kind, items, out, index) in [
                (
                    "tool",
                    &lists.tools,
                    &mut catalog.tools,
                    &mut catalog.tool_index,
                ),
                (
                    "prompt",
                    &lists.prompts,
                    &mut catalog.prompts,
                    &mut catalog.prompt_index,
                ),
            ] {
                for item in items {
                    let Some(original) = item.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let name = gateway_name(prefix, separator, original);
                    if let Some(&taken) = index.get(&name) {
                        let other: &Entry = &out[taken];
                        catalog.conflicts.push(format!(
                            "{kind} name {name:?} is offered by both server {:?} and server {:?}; \
                             it goes to {:?} (give the servers prefixes to keep both)",
                            naming[other.server].server,
                            naming[server].server,
                            naming[other.server].server
                        ));
                        continue;
                    }
                    if kind == "tool"
                        && prefix.is_some()
                        && is_valid_tool_name(original)
                        && !is_valid_tool_name(&name)
                    {
                        catalog.conflicts.push(format!(
                            "tool {original:?} of server {:?} would be {name:?}, which is not a valid MCP tool name (longer than 128 characters); choose a shorter prefix",
                            naming[server].server
                        ));
                        continue;
                    }
                    let mut value = item.clone();
                    value["name"] = Value::String(name.clone());
                    index.insert(name, out.len());
                    out.push(Entry {
                        server,
                        original: original.to_string(),
                        value,
                    });
                }
            }
            for resource in &lists.resources {
                if let Some(uri) = resource.get("uri").and_then(Value::as_str) {
                    catalog
                        .resource_index
                        .entry(uri.to_string())
                        .or_insert(server);
                }
                catalog.resources.push((server, resource.clone()));
            }
            for template in &lists.templates {
                catalog.templates.push((server, template.clone()));
            }
        }
        catalog
    }

    pub fn tool(&self, name: &str) -> Option<&Entry> {
        self.tool_index.get(name).map(|&i| &self.tools[i])
    }

    pub fn prompt(&self, name: &str) -> Option<&Entry> {
        self.prompt_index.get(name).map(|&i| &self.prompts[i])
    }

    /// The server that serves a resource URI: the one that listed it, else
    /// the first whose template's literal start matches it.
    pub fn resource_server(&self, uri: &str) -> Option<usize> {
        if let Some(&server) = self.resource_index.get(uri) {
            return Some(server);
        }
        self.templates
            .iter()
            .filter_map(|(server, t)| {
                let template = t.get("uriTemplate")?.as_str()?;
                let literal = template.split('{').next().unwrap_or(template);
                (!literal.is_empty() && uri.starts_with(literal))
                    .then_some((literal.len(), *server))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, server)| server)
    }
}

/// The servers' lists as last fetched, and the catalogue merged from them.
pub(crate) struct Lists {
    pub(crate) naming: Vec<Naming>,
    pub(crate) separator: String,
    /// Each server's lists, by server index (`None`: not fetched, or down).
    pub(crate) held: Mutex<Vec<Option<ServerLists>>>,
    pub(crate) merged: RwLock<Arc<Catalog>>,
    /// The stateless lists of the servers that speak both generations, by
    /// server index (`None` for every other server, or while down).
    pub(crate) twins: Mutex<Vec<Option<ServerLists>>>,
    /// The catalogue of 2026-07-28 clients: `merged` with each server's
    /// stateless lists where it has them (the same catalogue when none has).
    pub(crate) stateless: RwLock<Arc<Catalog>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn naming(prefixes: &[(&str, Option<&str>)]) -> Vec<Naming> {
        prefixes
            .iter()
            .map(|(s, p)| Naming {
                server: s.to_string(),
                prefix: p.map(str::to_string),
            })
            .collect()
    }

    fn tools(names: &[&str]) -> Option<ServerLists> {
        Some(ServerLists {
            tools: names
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn names_are_prefixed_and_routed_back() {
        let c = Catalog::build(
            &naming(&[("a", Some("a")), ("b", None)]),
            &[tools(&["echo"]), tools(&["echo2"])],
            "__",
        );
        assert_eq!(c.tool("a__echo").unwrap().original, "echo");
        assert_eq!(c.tool("a__echo").unwrap().server, 0);
        assert_eq!(c.tool("echo2").unwrap().server, 1);
        assert!(c.tool("echo").is_none());
        assert_eq!(c.tools[0].value["name"], "a__echo");
        assert!(c.conflicts.is_empty());
    }

    #[test]
    fn a_collision_is_reported_and_the_first_server_keeps_the_name() {
        let c = Catalog::build(
            &naming(&[("a", None), ("b", None)]),
            &[tools(&["echo"]), tools(&["echo"])],
            "__",
        );
        assert_eq!(c.tool("echo").unwrap().server, 0);
        assert_eq!(c.conflicts.len(), 1);
        assert!(c.conflicts[0].contains("\"a\"") && c.conflicts[0].contains("\"b\""));
    }

    #[test]
    fn a_down_server_has_no_tools() {
        let c = Catalog::build(&naming(&[("a", Some("a"))]), &[None], "__");
        assert!(c.tools.is_empty());
    }

    #[test]
    fn tool_names_are_checked() {
        assert!(is_valid_tool_name("everything__get-sum.v2"));
        assert!(!is_valid_tool_name("a b"));
        assert!(!is_valid_tool_name(""));
        assert!(!is_valid_tool_name(&"x".repeat(129)));
    }

    #[test]
    fn resources_route_by_uri_then_template() {
        let lists = ServerLists {
            resources: vec![json!({"uri": "test://static/1"})],
            templates: vec![json!({"uriTemplate": "test://dynamic/{id}"})],
            ..Default::default()
        };
        let c = Catalog::build(
            &naming(&[("a", None), ("b", None)]),
            &[None, Some(lists)],
            "__",
        );
        assert_eq!(c.resource_server("test://static/1"), Some(1));
        assert_eq!(c.resource_server("test://dynamic/7"), Some(1));
        assert_eq!(c.resource_server("other://x"), None);
    }
}
