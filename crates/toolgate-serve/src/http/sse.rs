//! Answers as Server-Sent Events: the GET stream, and streamed answers
//! with event ids that `Last-Event-ID` resumes.

use super::Body;
use crate::replay::EventLog;
use crate::streams::Listen;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;

pub(crate) fn event_frame(id: Option<&str>, message: &Value) -> Frame<Bytes> {
    let mut event = Vec::with_capacity(128);
    if let Some(id) = id {
        event.extend_from_slice(b"id: ");
        event.extend_from_slice(id.as_bytes());
        event.push(b'\n');
    }
    event.extend_from_slice(b"event: message\ndata: ");
    serde_json::to_writer(&mut event, message).expect("serialisable");
    event.extend_from_slice(b"\n\n");
    Frame::data(Bytes::from(event))
}

pub(super) fn sse_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response")
}

/// An SSE stream of messages with no ids (the GET stream).
pub(super) fn sse(mut rx: mpsc::UnboundedReceiver<Value>) -> Response<Body> {
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|m| m.map(|message| Ok::<_, Infallible>(event_frame(None, &message))))
    });
    sse_response(StreamBody::new(stream).boxed())
}

/// A `subscriptions/listen` stream: its acknowledgement, then what it asked for.
pub(super) fn sse_listen(listen: Listen, mut rx: mpsc::UnboundedReceiver<Value>) -> Response<Body> {
    let mut first = Some(listen.acknowledgement());
    let stream = futures_util::stream::poll_fn(move |cx| {
        if let Some(ack) = first.take() {
            return Poll::Ready(Some(Ok::<_, Infallible>(event_frame(None, &ack))));
        }
        loop {
            match std::task::ready!(rx.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some(message) => {
                    if let Some(message) = listen.deliver(message) {
                        return Poll::Ready(Some(Ok(event_frame(None, &message))));
                    }
                }
            }
        }
    });
    sse_response(StreamBody::new(stream).boxed())
}

/// A streamed answer from its `from`th event on, each event with its id.
pub(super) fn sse_log(log: Arc<EventLog>, from: usize) -> Response<Body> {
    let stream = futures_util::stream::unfold((log, from), |(log, index)| async move {
        let message = log.get(index).await?;
        let id = format!("{}/{index}", log.id);
        Some((
            Ok::<_, Infallible>(event_frame(Some(&id), &message)),
            (log, index + 1),
        ))
    });
    sse_response(StreamBody::new(stream).boxed())
}
