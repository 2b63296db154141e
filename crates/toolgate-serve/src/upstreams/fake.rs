//! A fake upstream server for in-process tests of the router: it is always
//! ready, lists the tools it was given, answers `tools/call` with the name it
//! was called by, and records every request it receives.

use super::Upstream;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_upstream::{Answer, CallError, Downstream, ServerInfo};

#[derive(Clone)]
pub(crate) struct FakeServer {
    info: Arc<ServerInfo>,
    tools: Vec<Value>,
    /// Every request received: (method, params).
    pub(crate) received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeServer {
    /// A server offering tools of these names.
    pub(crate) fn with_tools(names: &[&str]) -> FakeServer {
        FakeServer {
            info: Arc::new(ServerInfo {
                protocol_version: "2025-11-25".into(),
                capabilities: json!({"tools": {}}),
                server_info: json!({"name": "fake", "version": "0"}),
                instructions: None,
            }),
            tools: names
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect(),
            received: Arc::default(),
        }
    }

    /// The methods of the requests received, the gateway's own list fetches left out.
    pub(crate) fn calls(&self) -> Vec<(String, Value)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| !m.ends_with("/list"))
            .cloned()
            .collect()
    }
}

impl Upstream for FakeServer {
    fn info(&self) -> Option<Arc<ServerInfo>> {
        Some(self.info.clone())
    }

    fn is_stateless(&self) -> bool {
        false
    }

    async fn wait_ready(&self, _: Duration) -> bool {
        true
    }

    fn request_answer(
        &self,
        method: &str,
        params: Option<Value>,
        _: Option<Arc<dyn Downstream>>,
    ) -> impl Future<Output = Result<Answer, CallError>> + Send {
        let params = params.unwrap_or(Value::Null);
        self.received
            .lock()
            .unwrap()
            .push((method.to_string(), params.clone()));
        let result = match method {
            "tools/list" => json!({ "tools": self.tools }),
            "tools/call" => {
                let name = params["name"].as_str().unwrap_or_default();
                json!({"content": [{"type": "text", "text": format!("called {name}")}]})
            }
            _ => json!({}),
        };
        async move { Ok(Answer::Parsed(result)) }
    }

    async fn notify(&self, method: &str, params: Option<Value>) {
        self.received
            .lock()
            .unwrap()
            .push((method.to_string(), params.unwrap_or(Value::Null)));
    }

    async fn shutdown(&self, _: Duration) {}
}
