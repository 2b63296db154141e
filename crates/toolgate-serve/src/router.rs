//! The MCP router: each request's method to what answers it. The gateway
//! answers `initialize`, `server/discover`, `ping` and the list methods from
//! the merged catalogue; requests that name a tool, prompt or resource go to
//! the server that owns it, with names mapped back. Answers are written in
//! the request's era (2026-07-28 results carry `resultType`).

use crate::forward::parsed;
use crate::forward::CALL_STATE;
use crate::gateway::Context;
use crate::gateway::Gateway;
use crate::gateway::Reply;
use crate::gateway::{rpc, STATELESS_VERSION};
use crate::grants::Caller;
use crate::rounds::{Relayed, UPSTREAM_STATE};
use crate::session::{random_id, Session};
use crate::upstreams::Upstream as _;
use serde_json::{json, Value};
use std::sync::Arc;
use toolgate_call::answer::Era;
use toolgate_jsonrpc::{error_response, result_response, INVALID_PARAMS, METHOD_NOT_FOUND};
use toolgate_upstream::{Answer, RpcError};

/// Where a 2026-07-28 result names its server.
const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

impl Gateway {
    /// A new session for an `initialize` request; returns the answer and the
    /// token. `versions`: what the transport speaks, the first when the
    /// client asks for none of them ([`HANDSHAKE_VERSIONS`](crate::gateway::HANDSHAKE_VERSIONS) for `/mcp`,
    /// [`LEGACY_VERSIONS`](crate::gateway::LEGACY_VERSIONS) for `/sse`).
    pub fn initialize(
        &self,
        caller: &Caller,
        id: &Value,
        params: &Value,
        versions: &[&'static str],
    ) -> (Value, String) {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = versions
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&versions[0]);
        let session = Session {
            id: random_id(),
            grant: caller.grant.name.clone(),
            version: version.to_string(),
            caps: params.get("capabilities").cloned().unwrap_or(json!({})),
            created: self.clock.now_ms() / 1000,
        };
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": self.capabilities(caller, Era::Handshake),
            "serverInfo": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")},
        });
        if let Some(instructions) = self.instructions(caller, Era::Handshake) {
            result["instructions"] = Value::String(instructions);
        }
        (
            result_response(id, result),
            self.sessions.key.seal(&session),
        )
    }

    /// What the servers a caller may reach offer, merged, as clients of
    /// `era` see them (2026-07-28: a twin's stateless side where it has one).
    pub(crate) fn capabilities(&self, caller: &Caller, era: Era) -> Value {
        let mut caps = json!({"tools": {"listChanged": true}, "logging": {}});
        for (index, _) in self.reachable(caller) {
            let Some(info) = self.info_for(index, era) else {
                continue;
            };
            let up = &info.capabilities;
            if up.get("prompts").is_some() {
                caps["prompts"] = json!({"listChanged": true});
            }
            if up.get("resources").is_some() {
                caps["resources"] = json!({"listChanged": true, "subscribe": true});
            }
            if up.get("completions").is_some() {
                caps["completions"] = json!({});
            }
        }
        caps
    }

    pub(crate) fn instructions(&self, caller: &Caller, era: Era) -> Option<String> {
        let parts: Vec<String> = self
            .reachable(caller)
            .filter_map(|(i, _)| self.info_for(i, era)?.instructions.clone())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    pub(crate) fn is_listed(
        &self,
        caller: &Caller,
        server: usize,
        gateway: &str,
        original: &str,
    ) -> bool {
        !self.is_held_back(server, original)
            && self.may_reach(caller, server)
            && self
                .gateway_policy(caller)
                .is_none_or(|p| p.is_listed(gateway))
            && self
                .server_policy(server)
                .is_none_or(|p| p.is_listed(original))
    }

    /// Answers one request. `id` is the client's id.
    pub async fn request(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        method: &str,
        params: Value,
    ) -> Reply {
        // A 2026-07-28 client's retry of a call its (stateless) server
        // answered input-required: the same call going on.
        let mut relayed = None;
        if ctx.era == Era::Stateless {
            if let Some(state) = params.get("requestState").and_then(Value::as_str) {
                if let Some(token) = state.strip_prefix(CALL_STATE) {
                    return self.resume(ctx, id, method, token, &params).await;
                }
                if let Some(sealed) = state.strip_prefix(UPSTREAM_STATE) {
                    match Relayed::open(&self.sessions.key, sealed) {
                        // Boxed: every call's future stays as small as before.
                        Some(call) if method == "tools/call" => relayed = Some(Box::new(call)),
                        _ => return Reply::Json(foreign_state(id)),
                    }
                }
            }
        }
        let answer =
            |result: Result<Value, RpcError>| Reply::Json(self.answer(ctx, id, method, result));
        match method {
            "ping" => answer(Ok(json!({}))),
            "server/discover" => answer(Ok(self.discover(&ctx.caller))),
            "tools/list" => {
                let catalog = self.catalog_for(ctx.era);
                let tools: Vec<Value> = catalog
                    .tools
                    .iter()
                    .filter(|e| {
                        self.is_listed(
                            &ctx.caller,
                            e.server,
                            e.value["name"].as_str().unwrap_or_default(),
                            &e.original,
                        )
                    })
                    .map(|e| e.value.clone())
                    .collect();
                answer(Ok(json!({ "tools": tools })))
            }
            "prompts/list" => {
                let catalog = self.catalog_for(ctx.era);
                let prompts: Vec<Value> = catalog
                    .prompts
                    .iter()
                    .filter(|e| self.may_reach(&ctx.caller, e.server))
                    .map(|e| e.value.clone())
                    .collect();
                answer(Ok(json!({ "prompts": prompts })))
            }
            "resources/list" => {
                let catalog = self.catalog_for(ctx.era);
                let resources: Vec<Value> = catalog
                    .resources
                    .iter()
                    .filter(|(s, _)| self.may_reach(&ctx.caller, *s))
                    .map(|(_, r)| r.clone())
                    .collect();
                answer(Ok(json!({ "resources": resources })))
            }
            "resources/templates/list" => {
                let catalog = self.catalog_for(ctx.era);
                let templates: Vec<Value> = catalog
                    .templates
                    .iter()
                    .filter(|(s, _)| self.may_reach(&ctx.caller, *s))
                    .map(|(_, r)| r.clone())
                    .collect();
                answer(Ok(json!({ "resourceTemplates": templates })))
            }
            "logging/setLevel" => {
                for (_, server) in self.reachable(&ctx.caller) {
                    if server
                        .upstream
                        .info()
                        .is_some_and(|i| i.capabilities.get("logging").is_some())
                    {
                        let _ = server
                            .upstream
                            .request(method, Some(params.clone()), None)
                            .await;
                    }
                }
                answer(Ok(json!({})))
            }
            "tools/call" => self.call_tool(ctx, id, params, relayed).await,
            "prompts/get" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let catalog = self.catalog_for(ctx.era);
                match catalog
                    .prompt(name)
                    .filter(|e| self.may_reach(&ctx.caller, e.server))
                {
                    Some(entry) => {
                        let mut params = params.clone();
                        params["name"] = Value::String(entry.original.clone());
                        self.forward(ctx, id, entry.server, method, params, None)
                            .await
                    }
                    None => answer(Err(rpc(INVALID_PARAMS, &format!("Unknown prompt: {name}")))),
                }
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let catalog = self.catalog_for(ctx.era);
                match catalog
                    .resource_server(&uri)
                    .filter(|s| self.may_reach(&ctx.caller, *s))
                {
                    Some(server) => {
                        if method == "resources/subscribe" {
                            self.streams
                                .subscriptions
                                .lock()
                                .expect("subscriptions lock")
                                .entry(uri)
                                .or_default()
                                .push(ctx.session.id.clone());
                        } else if method == "resources/unsubscribe" {
                            if let Some(s) = self
                                .streams
                                .subscriptions
                                .lock()
                                .expect("subscriptions lock")
                                .get_mut(&uri)
                            {
                                s.retain(|s| *s != ctx.session.id);
                            }
                        }
                        self.forward(ctx, id, server, method, params, None).await
                    }
                    // 2026-07-28 (SEP-2164): -32602, the uri in the data;
                    // the handshake era's -32002 for its clients.
                    None => answer(Err(RpcError {
                        code: if ctx.era == Era::Stateless {
                            INVALID_PARAMS
                        } else {
                            -32002
                        },
                        message: format!("Resource not found: {uri}"),
                        data: Some(json!({ "uri": uri })),
                    })),
                }
            }
            "completion/complete" => {
                let reference = params.get("ref").cloned().unwrap_or(Value::Null);
                let catalog = self.catalog_for(ctx.era);
                let target = match reference.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => catalog
                        .prompt(
                            reference
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        )
                        .map(|e| (e.server, Some(e.original.clone()))),
                    Some("ref/resource") => catalog
                        .resource_server(
                            reference
                                .get("uri")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        )
                        .map(|s| (s, None)),
                    _ => None,
                };
                match target.filter(|(s, _)| self.may_reach(&ctx.caller, *s)) {
                    Some((server, original)) => {
                        let mut params = params.clone();
                        if let Some(original) = original {
                            params["ref"]["name"] = Value::String(original);
                        }
                        self.forward(ctx, id, server, method, params, None).await
                    }
                    None => answer(Err(rpc(
                        INVALID_PARAMS,
                        "Invalid params: unknown completion reference",
                    ))),
                }
            }
            _ => answer(Err(rpc(
                METHOD_NOT_FOUND,
                &format!("Method not found: {method}"),
            ))),
        }
    }

    /// Server `index`'s initialize (or discover) result as clients of `era`
    /// are served: a 2026-07-28 client over a twin's stateless link while it is up.
    fn info_for(&self, index: usize, era: Era) -> Option<Arc<toolgate_upstream::ServerInfo>> {
        match era {
            Era::Stateless => self.twin_of(index).and_then(|t| t.info()),
            Era::Handshake => None,
        }
        .or_else(|| self.servers[index].upstream.info())
    }

    pub(crate) fn discover(&self, caller: &Caller) -> Value {
        let mut result = json!({
            "supportedVersions": [STATELESS_VERSION, "2025-11-25", "2025-06-18"],
            "capabilities": self.capabilities(caller, Era::Stateless),
            "serverInfo": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")},
            "_meta": {SERVER_INFO_KEY: {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")}},
        });
        if let Some(instructions) = self.instructions(caller, Era::Stateless) {
            result["instructions"] = Value::String(instructions);
        }
        result
    }

    /// A JSON-RPC answer in the request's era: 2026-07-28 results carry
    /// `resultType`, and cacheable ones their caching directives.
    pub(crate) fn answer(
        &self,
        ctx: &Context,
        id: &Value,
        method: &str,
        result: Result<Value, RpcError>,
    ) -> Value {
        match result {
            Ok(mut result) => {
                if ctx.era == Era::Stateless {
                    if let Value::Object(map) = &mut result {
                        map.entry("resultType").or_insert(json!("complete"));
                        if is_cacheable(method) {
                            map.entry("ttlMs").or_insert(json!(0));
                            map.entry("cacheScope").or_insert(json!("private"));
                        }
                    }
                }
                result_response(id, result)
            }
            Err(e) => error_response(id, e.code, &e.message, e.data),
        }
    }

    /// The reply to a forwarded request: an answer kept as text goes out as
    /// it came (in the handshake era, which adds nothing to a result).
    pub(crate) fn reply(
        &self,
        ctx: &Context,
        id: &Value,
        method: &str,
        result: Result<Answer, RpcError>,
    ) -> Reply {
        match result {
            Ok(Answer::Raw(raw)) if ctx.era == Era::Handshake => {
                let mut out = Vec::with_capacity(raw.get().len() + 40);
                out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
                serde_json::to_writer(&mut out, id).expect("an id serialises");
                out.extend_from_slice(br#","result":"#);
                out.extend_from_slice(raw.get().as_bytes());
                out.push(b'}');
                Reply::Raw(out.into())
            }
            other => Reply::Json(self.answer(ctx, id, method, other.and_then(parsed))),
        }
    }
}

/// The answer to a `requestState` the gateway did not seal for this call.
pub(crate) fn foreign_state(id: &Value) -> Value {
    error_response(
        id,
        INVALID_PARAMS,
        "Invalid params: requestState does not belong to this call (it expired, was used already, was altered, or belongs to another client, tool or arguments); send the call again without requestState and inputResponses",
        None,
    )
}

/// Results of these methods are cacheable in 2026-07-28 (`ttlMs`, `cacheScope`).
pub(crate) fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "server/discover"
    )
}

#[cfg(test)]
mod tests;
