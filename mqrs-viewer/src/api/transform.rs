//! `POST /api/transform`: the Jaeger UI's OTLP file upload. The body is OTLP/JSON traces (the UI
//! posts it as text/plain), read here into traces stored nowhere; `jaeger.rs` answers with them
//! in Jaeger's JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use crate::http::answer::{error, heavy};
use crate::http::limits::{read_body, BodyError};
use crate::store::{StoredTrace, TraceStore};

/// Largest file the viewer transforms, bytes.
const MAX_BODY: usize = 16 << 20;

/// The traces of a `POST /api/transform` body, or the refusal.
pub async fn traces(
    State(store): State<Arc<TraceStore>>,
    body: Body,
) -> Result<Vec<StoredTrace>, Response> {
    let body = match read_body(body, MAX_BODY, &store.viewer_http).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let msg = format!("the file is larger than {} MiB", MAX_BODY >> 20);
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, msg));
        }
        Err(BodyError::TooSlow) => {
            let msg = "the file came too slowly".to_string();
            return Err(error(StatusCode::REQUEST_TIMEOUT, msg));
        }
        Err(BodyError::Broken(e)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("body not read: {e}"),
            ))
        }
    };
    // Decoding a large file is a heavy answer: one at a time in the process.
    let Some(_permit) = heavy().await else {
        let msg = "shutting down".to_string();
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, msg));
    };
    crate::otlp::otlp_json_traces(&body, MAX_BODY)
        .map_err(|msg| error(StatusCode::BAD_REQUEST, msg))
}
