//! `POST /api/transform`: the Jaeger UI's OTLP file upload. The body is OTLP/JSON traces (the UI
//! posts it as text/plain); the answer is the traces in Jaeger's JSON, stored nowhere.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::jaeger::{envelope, jaeger_trace};
use crate::http::answer::{error, heavy};
use crate::http::limits::{read_body, BodyError};
use crate::store::TraceStore;

/// Largest file the viewer transforms, bytes.
const MAX_BODY: usize = 16 << 20;

/// Answers `POST /api/transform`.
pub async fn transform(State(store): State<Arc<TraceStore>>, body: Body) -> Response {
    let body = match read_body(body, MAX_BODY, &store.viewer_http).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the file is larger than {} MiB", MAX_BODY >> 20),
            )
        }
        Err(BodyError::TooSlow) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the file came too slowly".into(),
            )
        }
        Err(BodyError::Broken(e)) => {
            return error(StatusCode::BAD_REQUEST, format!("body not read: {e}"))
        }
    };
    // Decoding a large file is a heavy answer: one at a time in the process.
    let Some(_permit) = heavy().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    match crate::otlp::otlp_json_traces(&body, MAX_BODY) {
        Ok(traces) => {
            envelope(Value::Array(traces.iter().map(jaeger_trace).collect())).into_response()
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}
