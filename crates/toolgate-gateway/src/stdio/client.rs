//! Client → server: each line read strictly, routed (answered here,
//! forwarded as it was read, or held for approval), `tools/call` decided.

use super::*;

/// Decides what happens to one line from the client; pushes the messages to
/// forward to the server onto `forward`.
///
/// What is forwarded is what the gateway read: each message on a line of
/// its own ([`one_line`]: no byte a line reader could take for a line
/// break), a request under an id every parser reads alike.
pub(super) fn route_line(shared: &Arc<Shared>, bytes: Vec<u8>, forward: &mut Vec<Vec<u8>>) {
    let received = toolgate_clock::monotonic_now();
    match read_message(&bytes) {
        Err(StrictError::Syntax(e)) => {
            shared.send(&error_response(
                &Value::Null,
                PARSE_ERROR,
                &format!("Parse error: {e}"),
                None,
            ));
        }
        Err(StrictError::DuplicateKey(key)) => {
            // Answer with the id, when the message has a usable one.
            let id = toolgate_jsonrpc::peek_raw_id(&bytes).unwrap_or("null");
            shared.audit.log(
                LogLevel::Warn,
                &format!("refused a message that repeats the key {key:?}"),
            );
            shared.answer(
                id,
                &error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    &format!("Invalid Request: duplicate key {key:?}"),
                    None,
                ),
            );
        }
        Ok(Framed::Single(message)) => {
            // Forwarded as it came (the common case) without a copy.
            let out = route_one(shared, &bytes, message, received).map(|line| match line {
                Cow::Borrowed(_) => None,
                Cow::Owned(line) => Some(line),
            });
            match out {
                Some(Some(line)) => forward.push(line),
                Some(None) => forward.push(bytes),
                None => {}
            }
        }
        Ok(Framed::Batch(items)) => {
            if items.is_empty() {
                shared.send(&error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    "Invalid Request: empty batch",
                    None,
                ));
                return;
            }
            // MCP has had no batches since 2025-06-18, and servers drop them
            // whole. Each element is decided on its own and forwarded on its
            // own line; an element that is not a message (a number, a string,
            // an array: a batch in a batch) is answered -32600 and goes no
            // further.
            for item in items {
                let text = item.get().as_bytes();
                match incoming(item.get()) {
                    Ok(message) => {
                        if let Some(line) = route_one(shared, text, message, received) {
                            forward.push(line.into_owned());
                        }
                    }
                    Err(_) => shared.send(&invalid_request(&Value::Null)),
                }
            }
        }
    }
}

/// `text` through [`one_line`], copied only when that changes it.
pub(super) fn on_one_line(text: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let changed = match one_line(&text) {
        Cow::Owned(line) => Some(line),
        Cow::Borrowed(_) => None,
    };
    match changed {
        Some(line) => Cow::Owned(line),
        None => text,
    }
}

/// One message (alone, or an element of a batch) from the client; returns
/// what to forward to the server, if anything.
pub(super) fn route_one<'t>(
    shared: &Arc<Shared>,
    text: &'t [u8],
    message: Incoming<'_>,
    received: Instant,
) -> Option<Cow<'t, [u8]>> {
    match message {
        Incoming::Response { raw_id } => {
            // An answer to one of the gateway's own requests goes no further.
            if let Some(id) = Id::from_raw(raw_id) {
                let waiter = shared.asking.lock().expect("asking lock").remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(serde_json::from_slice(text).unwrap_or(Value::Null));
                    return None;
                }
            }
            Some(on_one_line(Cow::Borrowed(text)))
        }
        Incoming::Invalid | Incoming::BadId { .. } => {
            shared.send(&invalid_request(&Value::Null));
            None
        }
        Incoming::Notification { method, .. } if method == "tools/call" => {
            // A call without an id cannot be answered; a server that ran it anyway
            // would run it unpoliced.
            shared.audit.log(
                LogLevel::Warn,
                "dropped a tools/call sent as a notification (no id)",
            );
            None
        }
        Incoming::Notification { method, params } => {
            let text = match (&*method, params) {
                ("notifications/cancelled", Some(params)) => {
                    cancelled_for_server(shared, text, params)
                }
                _ => Cow::Borrowed(text),
            };
            Some(on_one_line(text))
        }
        Incoming::Request {
            id,
            raw_id,
            method,
            params,
        } => {
            // The id the server sees: the client's when every parser reads it
            // alike, else one of the gateway's own (mapped back on the answer).
            let (server_id, rewritten) = if Id::is_plain(raw_id) {
                (id, None)
            } else {
                let mine = loop {
                    let n = shared
                        .next_rewrite
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let raw = format!("\"toolgate-id-{n}\"");
                    let mine = Id::from_raw(&raw).expect("a string id");
                    if !shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .contains_key(&mine)
                    {
                        break (mine, raw);
                    }
                };
                (mine.0, Some((id, mine.1)))
            };
            if shared
                .pending
                .lock()
                .expect("pending lock")
                .contains_key(&server_id)
            {
                shared.answer(raw_id, &id_in_use(&Value::Null));
                return None;
            }
            let route = route_request(shared, (&server_id, raw_id), &method, params, received);
            let entry = |what| Entry {
                what,
                client_id: raw_id.into(),
                rewritten: rewritten.is_some(),
            };
            let bytes = on_one_line(match &rewritten {
                Some((_, raw)) => Cow::Owned(toolgate_jsonrpc::replace_raw(text, raw_id, raw)),
                None => Cow::Borrowed(text),
            });
            match route {
                Route::Answer(answer) => {
                    shared.answer(raw_id, &answer);
                    None
                }
                Route::Pass(what) => {
                    shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .insert(server_id, entry(what));
                    if let Some((client, raw)) = rewritten {
                        shared
                            .rewritten
                            .lock()
                            .expect("rewritten lock")
                            .insert(client, raw.into());
                    }
                    Some(bytes)
                }
                Route::Hold(held) => {
                    shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .insert(held.id.clone(), entry(Pending::Held));
                    hold_call(shared, *held, bytes.into_owned());
                    None
                }
            }
        }
    }
}

/// A client's `notifications/cancelled` as the server must read it: a
/// request whose id the gateway replaced is named by the gateway's id.
pub(super) fn cancelled_for_server<'t>(
    shared: &Shared,
    text: &'t [u8],
    params: &RawValue,
) -> Cow<'t, [u8]> {
    #[derive(serde::Deserialize)]
    struct Cancelled<'a> {
        #[serde(rename = "requestId", borrow)]
        request_id: Option<&'a RawValue>,
    }
    let Ok(Cancelled {
        request_id: Some(raw),
    }) = serde_json::from_str::<Cancelled<'_>>(params.get())
    else {
        return Cow::Borrowed(text);
    };
    let Some(id) = Id::from_raw(raw.get()) else {
        return Cow::Borrowed(text);
    };
    match shared.rewritten.lock().expect("rewritten lock").get(&id) {
        Some(mine) => Cow::Owned(toolgate_jsonrpc::replace_raw(text, raw.get(), mine)),
        None => Cow::Borrowed(text),
    }
}

pub(super) fn invalid_request(id: &Value) -> Value {
    error_response(
        id,
        INVALID_REQUEST,
        "Invalid Request: not a JSON-RPC 2.0 message",
        None,
    )
}

pub(super) fn route_request(
    shared: &Shared,
    (server_id, client_id): (&Id, &str),
    method: &str,
    params: Option<&RawValue>,
    received: Instant,
) -> Route {
    match method {
        "tools/call" => police_call(shared, (server_id, client_id), params, received),
        "initialize" => {
            let caps = params
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|p| p.get("capabilities").cloned());
            *shared.client_caps.lock().expect("caps lock") = caps;
            Route::Pass(Pending::Other)
        }
        "tools/list" => Route::Pass(Pending::List),
        _ => Route::Pass(Pending::Other),
    }
}

pub(super) fn id_in_use(id: &Value) -> Value {
    error_response(
        id,
        INVALID_REQUEST,
        "Invalid Request: a request with this id is already in flight",
        None,
    )
}

/// The parts of tools/call params the policy reads.
#[derive(serde::Deserialize)]
pub(super) struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// As the client wrote it: conditions compare its numbers exactly.
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default, rename = "_meta", borrow)]
    meta: Option<&'a RawValue>,
    /// 2026-07-28 retry of an input-required round trip.
    #[serde(default, rename = "requestState")]
    request_state: Option<String>,
    #[serde(default, rename = "inputResponses")]
    input_responses: Option<Value>,
}

pub(super) fn police_call(
    shared: &Shared,
    (server_id, client_id): (&Id, &str),
    params: Option<&RawValue>,
    received: Instant,
) -> Route {
    // Params must be an object: an array would be read by position here and
    // perhaps otherwise by the server.
    if params.is_some_and(|p| !p.get().trim_start().starts_with('{')) {
        return Route::Answer(error_response(
            &Value::Null,
            INVALID_PARAMS,
            "Invalid params: tools/call params must be an object",
            None,
        ));
    }
    let parsed = params.map(|p| serde_json::from_str::<CallParams<'_>>(p.get()));
    let CallParams {
        name,
        arguments,
        meta,
        request_state,
        input_responses,
    } = match parsed {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return Route::Answer(error_response(
                &Value::Null,
                INVALID_PARAMS,
                &format!("Invalid params: tools/call params: {e}"),
                None,
            ))
        }
        None => {
            return Route::Answer(error_response(
                &Value::Null,
                INVALID_PARAMS,
                "Invalid params: tools/call needs params",
                None,
            ))
        }
    };
    let arguments_text = arguments.map(RawValue::get);
    let arguments: Value = match arguments_text.map(serde_json::from_str).transpose() {
        Ok(arguments) => arguments.unwrap_or(Value::Null),
        Err(e) => {
            return Route::Answer(error_response(
                &Value::Null,
                INVALID_PARAMS,
                &format!("Invalid params: tools/call params: arguments: {e}"),
                None,
            ))
        }
    };
    let tool: &str = &name;
    let pinned = pin_check(shared, tool);
    let held_back = match &pinned {
        PinCheck::Clear => None,
        PinCheck::Changed => Some(HeldBack::PinChanged {
            server: &shared.server_name,
            tool,
        }),
        PinCheck::Unavailable(why) => Some(HeldBack::PinUnavailable { why }),
    };
    if let Some(held_back) = held_back {
        let era = Era::of_meta(
            meta.and_then(|m| serde_json::from_str(m.get()).ok())
                .as_ref(),
        );
        return Route::Answer(toolgate_jsonrpc::result_response(
            &Value::Null,
            held_back.result(tool, era),
        ));
    }
    if !(arguments.is_object() || arguments.is_null()) {
        return Route::Answer(error_response(
            &Value::Null,
            INVALID_PARAMS,
            "Invalid params: params.arguments must be an object",
            None,
        ));
    }
    let arguments = &arguments;
    let now = shared.clock.now_ms();
    let call = Call {
        tool,
        arguments,
        arguments_text,
        grant: &shared.grant,
        session: &shared.session,
    };
    let decision = shared
        .policy
        .get()
        .decide(&call, shared.store.as_ref(), now);
    let meta_text = meta.map(RawValue::get);
    let facts = CallFacts {
        trace: TraceContext::Meta(meta_text),
        keep_args: shared.audit_args,
        ..CallFacts::new(&shared.grant, &shared.session, tool, arguments, received)
    };
    let era_of_meta = || {
        Era::of_meta(
            meta.and_then(|m| serde_json::from_str(m.get()).ok())
                .as_ref(),
        )
    };
    let decision = match verdict(
        &shared.audit,
        &*shared.clock,
        &facts,
        decision,
        &Value::Null,
        era_of_meta,
    ) {
        Verdict::Forward { taken, record } => {
            let flight = CallInFlight {
                grant: taken,
                started: received,
                record: record.map(|r| shared.audit.intend(r)),
            };
            return Route::Pass(Pending::Call(Box::new(flight)));
        }
        Verdict::Answer(answer) => return Route::Answer(answer),
        Verdict::Hold(decision) => decision,
    };
    let meta: Option<Value> = meta.and_then(|m| serde_json::from_str(m.get()).ok());
    let era = Era::of_meta(meta.as_ref());
    let elicitation_2026 = meta
        .as_ref()
        .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
        .is_some_and(|caps| caps.get("elicitation").is_some());
    let answer = request_state
        .as_deref()
        .and_then(|s| s.strip_prefix(APPROVAL_STATE))
        .map(str::to_string)
        .zip(
            input_responses
                .as_ref()
                .and_then(|r| r.pointer(&format!("/{APPROVAL_INPUT}/action")))
                .and_then(Value::as_str)
                .map(str::to_string),
        );
    Route::Hold(Box::new(HeldCall {
        meta: meta_text.map(str::to_string),
        id: server_id.clone(),
        client_id: client_id.into(),
        tool: tool.to_owned(),
        arguments: arguments.clone(),
        decision,
        era,
        received,
        elicitation_2026,
        answer,
    }))
}
