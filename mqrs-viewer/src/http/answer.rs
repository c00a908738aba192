//! The answer's shape shared by the viewer's APIs: the cap on an answer's size, the permit a
//! heavy answer waits for, the JSON error, trace ids as the URL gives them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Spans (in the store's own measure) one search answers with at most; the JSON is about twice
/// that. Bounds the memory and time a search can take, whatever its `limit`.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The process's permit for a heavy answer (see `limits`), waited for; `None` only if the
/// budget is closed.
pub(crate) async fn heavy() -> Option<mqrs_base::budget::Share> {
    super::limits::HEAVY_QUERIES.take(1).await
}

/// What to tell a reader of a trace cut short of its `total` spans by the answer cap.
pub(crate) fn cut_warning(shown: usize, total: usize) -> Option<String> {
    (shown < total).then(|| {
        format!(
            "trace cut at about {} MiB: {shown} of its {total} spans shown",
            MAX_ANSWER_BYTES >> 20,
        )
    })
}

/// Parses a Jaeger trace id: up to 32 hex digits.
pub fn parse_trace_id(s: &str) -> Option<u128> {
    (!s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

/// An error answer in the API's JSON shape.
pub(crate) fn error(status: StatusCode, msg: String) -> Response {
    (
        status,
        Json(json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                    "errors": [{"code": status.as_u16(), "msg": msg}]})),
    )
        .into_response()
}

/// Answers unknown paths with a JSON error, like Jaeger.
pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint".into())
}
