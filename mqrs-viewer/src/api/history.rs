//! `GET /api/history?session=ID` and `?user=ID`: every request of a player's gate connections,
//! whatever was sampled (the embedding process's request history): time, operation,
//! duration, reply size, error, and the trace id when the trace was kept. A viewer without a
//! history (the standalone one) answers with no sessions and says so.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mqrs_base::history::SessionRead;
use serde_json::{json, Value};

use crate::http::answer::error;
use crate::store::TraceStore;

/// Most sessions one answer holds (a user's newest).
const MAX_SESSIONS: usize = 50;

/// The query: one of `session` and `user`.
#[derive(serde::Deserialize)]
pub struct Ask {
    session: Option<String>,
    user: Option<String>,
}

/// Answers `GET /api/history`.
pub async fn history(State(store): State<Arc<TraceStore>>, Query(q): Query<Ask>) -> Response {
    let Some(h) = store.history() else {
        return Json(json!({"data": [], "source": "none",
            "note": "this viewer keeps no request history (it is kept by a process with a gate)"}))
        .into_response();
    };
    let sessions: Vec<SessionRead> = match (q.session.as_deref(), q.user.as_deref()) {
        (Some(s), None) => h.by_session(s).into_iter().collect(),
        (None, Some(u)) => {
            let mut all = h.by_user(u);
            let skip = all.len().saturating_sub(MAX_SESSIONS);
            all.drain(..skip);
            all
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give one of `session` and `user`".into(),
            )
        }
    };
    let data: Vec<Value> = sessions.iter().map(session_json).collect();
    Json(json!({"data": data, "source": "history"})).into_response()
}

fn session_json(s: &SessionRead) -> Value {
    let entries: Vec<Value> = s
        .entries
        .iter()
        .map(|(e, operation)| {
            let (error_type, error) = e
                .error
                .as_deref()
                .map_or((None, None), |(k, t)| (Some(&**k), Some(&**t)));
            json!({
                "start_us": e.at_ms * 1000,
                "duration_us": e.dur_us,
                "operation": &**operation,
                "reply_bytes": e.reply_bytes,
                "error_type": error_type,
                "error": error,
                "trace_id": (e.trace() != 0).then(|| format!("{:032x}", e.trace())),
            })
        })
        .collect();
    json!({
        "session_id": s.session_id,
        "user_id": s.user_id,
        "closed_at_us": s.closed_at_ms.map(|t| t * 1000),
        "entries": entries,
    })
}

/// The history's size for `/api/stats`.
pub fn stats(store: &TraceStore) -> Value {
    let Some(h) = store.history() else {
        return Value::Null;
    };
    let s = h.stats();
    let l = h.limits();
    json!({
        "connections": s.connections,
        "entries": s.entries,
        "bytes": s.bytes,
        "bytes_per_entry": mqrs_base::history::ENTRY_BYTES,
        "per_connection": l.per_connection,
        "max_entries": l.max_entries,
        "keep_closed_s": l.keep_closed_ms / 1000,
    })
}
