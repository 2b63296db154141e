//! A fake upstream server for in-process tests of the router: it is always
//! ready, lists the tools it was given, answers `tools/call` with the name it
//! was called by, and records every request it receives. One may have a
//! stateless twin (a second fake, the server's 2026-07-28 side): asked for
//! it once, the gateway gets it, and `probes` counts the asking.

use super::Upstream;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_upstream::{Answer, CallError, Downstream, ServerInfo, UpstreamEvent};

#[derive(Clone)]
pub(crate) struct FakeServer {
    info: Arc<ServerInfo>,
    tools: Vec<Value>,
    /// Every request received: (method, params).
    pub(crate) received: Arc<Mutex<Vec<(String, Value)>>>,
    /// What the gateway gets when it asks for a stateless twin.
    twin: Option<Box<FakeServer>>,
    /// How many times it asked.
    pub(crate) probes: Arc<AtomicUsize>,
    /// Where the twin's events go once the gateway has it.
    pub(crate) events: Arc<Mutex<Option<mpsc::UnboundedSender<UpstreamEvent>>>>,
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
            twin: None,
            probes: Arc::default(),
            events: Arc::default(),
        }
    }

    /// This server, also speaking 2026-07-28 with `twin` as its stateless side.
    pub(crate) fn with_twin(mut self, twin: &FakeServer) -> FakeServer {
        self.twin = Some(Box::new(twin.clone()));
        self
    }

    /// This server, saying it has `capabilities` and these `instructions`.
    pub(crate) fn saying(mut self, capabilities: Value, instructions: &str) -> FakeServer {
        let mut info = (*self.info).clone();
        info.capabilities = capabilities;
        info.instructions = Some(instructions.into());
        self.info = Arc::new(info);
        self
    }

    /// A server spoken to statelessly (its info says 2026-07-28).
    pub(crate) fn stateless(mut self) -> FakeServer {
        let mut info = (*self.info).clone();
        info.protocol_version = "2026-07-28".into();
        self.info = Arc::new(info);
        self
    }

    /// Every request received but the gateway's list fetches.
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
        self.info.protocol_version == "2026-07-28"
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

    async fn stateless_twin(
        &self,
        events: mpsc::UnboundedSender<UpstreamEvent>,
        _: Duration,
    ) -> Option<FakeServer> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        let twin = self.twin.as_deref()?.clone();
        *twin.events.lock().unwrap() = Some(events);
        Some(twin)
    }
}
