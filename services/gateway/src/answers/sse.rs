//! An answer's event stream written as Server-Sent Events, in the format a
//! route chooses: Sovra's named events or OpenAI's chunks.

use actix_web::HttpResponse;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use serde::Serialize;
use sovra_answer::{AnswerEvent, AnswerStream, Finished, Source};
use tokio::sync::mpsc;

use super::record::{self, OutcomeRecorder};
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// How a streamed answer is written.
pub trait StreamFormat: Send + 'static {
    /// The first event, before any text: the answer's sources.
    fn sources(&self, sources: &[Source]) -> Bytes;
    fn text(&self, text: &str) -> Bytes;
    /// The closing events: citations, usage, the end marker.
    fn finish(&self, finished: &Finished) -> Vec<Bytes>;
    fn error(&self, problem: &Problem) -> Bytes;
}

/// Streams an answer. A client that goes away cancels the generation; the
/// outcome of a generation is recorded in the audit trail either way (an
/// answer without one, the refusal, is in the request's own record).
pub fn stream(
    state: web::Data<AppState>,
    mut answer: AnswerStream,
    recorder: OutcomeRecorder,
    format: impl StreamFormat,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let mut connected = true;
        while let Some(event) = answer.next().await {
            let bytes = match event {
                AnswerEvent::Sources(sources) => format.sources(&sources),
                AnswerEvent::Text(text) => format.text(&text),
                AnswerEvent::Done(finished) => {
                    let committed = match &finished.generation {
                        Some(g) => {
                            record::observe(&state, g);
                            recorder.record(&state, Ok((g, &finished))).await
                        }
                        None => true,
                    };
                    if !connected {
                        return;
                    }
                    // Fail closed: the closing events (citations, usage, the
                    // end marker) go out only once the outcome record is
                    // committed; otherwise the stream ends with an error
                    // event and the client never sees a completed answer.
                    if committed || !state.settings.audit.fail_closed {
                        for bytes in format.finish(&finished) {
                            if tx.send(bytes).await.is_err() {
                                break;
                            }
                        }
                    } else {
                        let problem = Problem::new(
                            ErrorCode::AuditUnavailable,
                            "the answer's audit record could not be committed; the answer is withdrawn",
                        );
                        let _ = tx.send(format.error(&problem)).await;
                    }
                    return;
                }
                AnswerEvent::Failed(e) => {
                    let problem = record::generation_failed(&state, &e);
                    let _ = tx.send(format.error(&problem)).await;
                    let _ = recorder.record(&state, Err("generation_failed")).await;
                    return;
                }
            };
            if connected && tx.send(bytes).await.is_err() {
                connected = false;
                answer.cancel();
            }
        }
    });
    response(rx)
}

/// A `text/event-stream` response fed by `body`'s receiver.
fn response(body: mpsc::Receiver<Bytes>) -> HttpResponse {
    let stream = futures_util::stream::unfold(body, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, actix_web::Error>(b), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// One Server-Sent Event; `event` None for OpenAI's unnamed `data:` lines.
pub fn event(name: Option<&str>, data: &impl Serialize) -> Bytes {
    let mut s = String::new();
    if let Some(e) = name {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    match serde_json::to_string(data) {
        Ok(json) => s.push_str(&json),
        Err(e) => {
            tracing::error!(error = %e, "an event could not be encoded");
            s.push_str(r#"{"error":"encoding"}"#);
        }
    }
    s.push_str("\n\n");
    Bytes::from(s)
}
