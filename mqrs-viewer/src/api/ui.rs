//! The viewer's web page: one HTML document for every view (search, trace, compare, session),
//! and its scripts, one per view, all compiled into the binary so the viewer needs no files.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("ui/index.html");

/// The page's scripts by file name, in the order the page loads them.
const SCRIPTS: [(&str, &str); 8] = [
    ("common.js", include_str!("ui/common.js")),
    ("search.js", include_str!("ui/search.js")),
    ("graph.js", include_str!("ui/graph.js")),
    ("trace.js", include_str!("ui/trace.js")),
    ("compare.js", include_str!("ui/compare.js")),
    ("session.js", include_str!("ui/session.js")),
    ("dashboard.js", include_str!("ui/dashboard.js")),
    ("main.js", include_str!("ui/main.js")),
];

/// The page's routes: the views' addresses and the scripts.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/trace/{id}", get(page))
        .route("/compare/{a}/{b}", get(page))
        .route("/session/{id}", get(page))
        .route("/user/{id}", get(page))
        .route("/ui/{file}", get(script))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn script(Path(file): Path<String>) -> Response {
    match SCRIPTS.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => (
            [
                (CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => crate::http::answer::not_found().await,
    }
}
