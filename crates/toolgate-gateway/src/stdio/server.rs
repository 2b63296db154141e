//! Server → client: answers matched to the requests in flight (by the id
//! the server reads), `tools/list` filtered, calls settled and audited; and
//! what happens to them when the server exits.

use super::*;

pub(super) fn server_to_client(shared: &Shared, server_out: std::process::ChildStdout) {
    let mut reader = FrameReader::new(server_out, usize::MAX);
    loop {
        let bytes = match reader.read_frame() {
            Ok(Some(Frame::Line(bytes))) => bytes,
            Ok(Some(Frame::Oversize)) => continue,
            Ok(None) | Err(_) => return,
        };
        let out = answer_from_server(shared, bytes);
        let mut client = shared.to_client.lock().expect("client lock");
        if client
            .write_all(&out)
            .and_then(|()| client.write_all(b"\n"))
            .is_err()
        {
            return;
        }
        if !reader.has_buffered() && client.flush().is_err() {
            return;
        }
    }
}

/// Settles the request a server message answers, if the gateway tracks it;
/// returns the bytes to give the client (with the id as the client spelled
/// it).
pub(super) fn answer_from_server(shared: &Shared, bytes: Vec<u8>) -> Vec<u8> {
    if shared.pending.lock().expect("pending lock").is_empty() {
        return bytes;
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return batch_from_server(shared, bytes);
    }
    let Some(p) = peek(&bytes) else {
        return unreadable(shared, bytes);
    };
    if p.method.is_some() {
        return bytes;
    }
    let Some(raw) = p.id else { return bytes };
    let Some(id) = Id::from_raw(raw.get()) else {
        return bytes;
    };
    let is_error = p.error.is_some();
    let Some(entry) = take_entry(shared, id) else {
        return bytes;
    };
    let respelled = (raw.get() != &*entry.client_id)
        .then(|| toolgate_jsonrpc::replace_raw(&bytes, raw.get(), &entry.client_id));
    let bytes = respelled.unwrap_or(bytes);
    match entry.what {
        Pending::Call(flight) => {
            settle_call(shared, *flight, is_error);
            bytes
        }
        Pending::Other | Pending::Held => bytes,
        Pending::List => match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut value) => {
                filter_tools_list(shared, &mut value);
                toolgate_jsonrpc::to_vec_with_id(&value, &entry.client_id)
            }
            // Not filtered, not passed on: a lenient client could read the
            // tools the policy hides in it.
            Err(e) => toolgate_jsonrpc::to_vec_with_id(
                &error_response(
                    &Value::Null,
                    INTERNAL_ERROR,
                    &format!("the server's tools/list answer cannot be read: {e}"),
                    None,
                ),
                &entry.client_id,
            ),
        },
    }
}

/// A server line that is not JSON the gateway can read (`NaN`, say, which a
/// lenient client would read): while a `tools/list` is in flight it could be
/// that answer, unfiltered, so it goes no further and every `tools/list` in
/// flight is answered with an error instead. Otherwise it passes as it came.
fn unreadable(shared: &Shared, bytes: Vec<u8>) -> Vec<u8> {
    let lists: Vec<Entry> = {
        let mut pending = shared.pending.lock().expect("pending lock");
        let ids: Vec<Id> = pending
            .iter()
            .filter(|(_, e)| matches!(e.what, Pending::List))
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().filter_map(|id| pending.remove(id)).collect()
    };
    if lists.is_empty() {
        return bytes;
    }
    shared.audit.log(
        LogLevel::Warn,
        "the server sent a message that is not JSON while a tools/list was in flight; it was not passed on",
    );
    let mut out = Vec::new();
    for (i, entry) in lists.iter().enumerate() {
        forget_rewrite(shared, entry);
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(&toolgate_jsonrpc::to_vec_with_id(
            &error_response(
                &Value::Null,
                INTERNAL_ERROR,
                "the server's tools/list answer cannot be read",
                None,
            ),
            &entry.client_id,
        ));
    }
    out
}

/// Takes the entry of the request a server answer names; a held call's is
/// left in place (it was never forwarded, so the answer is not to it).
pub(super) fn take_entry(shared: &Shared, id: Id) -> Option<Entry> {
    let mut pending = shared.pending.lock().expect("pending lock");
    if matches!(
        pending.get(&id),
        Some(Entry {
            what: Pending::Held,
            ..
        })
    ) {
        return None;
    }
    let entry = pending.remove(&id)?;
    drop(pending);
    forget_rewrite(shared, &entry);
    Some(entry)
}

/// A request that is no longer in flight no longer needs its id mapped.
fn forget_rewrite(shared: &Shared, entry: &Entry) {
    if entry.rewritten {
        if let Some(client) = Id::from_raw(&entry.client_id) {
            shared
                .rewritten
                .lock()
                .expect("rewritten lock")
                .remove(&client);
        }
    }
}

pub(super) fn batch_from_server(shared: &Shared, bytes: Vec<u8>) -> Vec<u8> {
    let Ok(Value::Array(mut items)) = serde_json::from_slice::<Value>(&bytes) else {
        return unreadable(shared, bytes);
    };
    let mut spelled: Vec<Option<Box<str>>> = Vec::with_capacity(items.len());
    for item in &mut items {
        spelled.push(None);
        if item.get("method").is_some() {
            continue;
        }
        let Some(id) = item.get("id").and_then(Id::of) else {
            continue;
        };
        let Some(entry) = take_entry(shared, id) else {
            continue;
        };
        match entry.what {
            Pending::Call(flight) => settle_call(shared, *flight, item.get("error").is_some()),
            Pending::List => filter_tools_list(shared, item),
            Pending::Other | Pending::Held => {}
        }
        *spelled.last_mut().expect("pushed") = Some(entry.client_id);
    }
    let mut out = vec![b'['];
    for (i, (item, client_id)) in items.iter().zip(&spelled).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match client_id {
            Some(id) => out.extend_from_slice(&toolgate_jsonrpc::to_vec_with_id(item, id)),
            None => serde_json::to_writer(&mut out, item).expect("serialisable"),
        }
    }
    out.push(b']');
    out
}

pub(super) fn settle_call(shared: &Shared, flight: CallInFlight, is_error: bool) {
    let CallInFlight {
        grant,
        started,
        record,
    } = flight;
    if is_error {
        // The call did not happen: its quota goes back.
        shared.store.release(&grant);
    }
    if let Some(mut record) = record {
        record.outcome = if is_error {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        record.latency_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        shared.audit.record(record);
    }
}

/// Removes the tools the policy hides (or refuses by default) from a tools/list answer.
pub(super) fn filter_tools_list(shared: &Shared, message: &mut Value) {
    let policy = shared.policy.get();
    let now = shared.clock.now_ms();
    if let Some(tools) = message
        .pointer_mut("/result/tools")
        .and_then(Value::as_array_mut)
    {
        tools.retain(|t| {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return false;
            };
            policy.is_listed(name) && pin_allows(shared, &policy, t, name, now)
        });
    }
}

/// The server is gone: every request still waiting gets an error now.
pub(super) fn fail_in_flight(shared: &Shared) {
    let drained: Vec<Entry> = {
        let mut pending = shared.pending.lock().expect("pending lock");
        // Held calls are answered by their own thread (the server is gone by
        // the time they are approved, and they say so then).
        let ids: Vec<Id> = pending
            .iter()
            .filter(|(_, e)| !matches!(e.what, Pending::Held))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| pending.remove(&id))
            .collect()
    };
    for entry in drained {
        forget_rewrite(shared, &entry);
        shared.answer(
            &entry.client_id,
            &error_response(
                &Value::Null,
                INTERNAL_ERROR,
                "upstream server exited before answering",
                Some(json!({"toolgate": {"reason": "upstream_exited"}})),
            ),
        );
        if let Pending::Call(flight) = entry.what {
            if let Some(mut record) = flight.record {
                record.outcome = Outcome::NoResponse;
                record.latency_ms = Some(flight.started.elapsed().as_secs_f64() * 1e3);
                shared.audit.record(record);
            }
        }
    }
}
