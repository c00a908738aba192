//! Web pages the gate's WebSocket port serves to plain `GET` requests (`App::add_page`): a
//! browser client beside its MQTT endpoint, from the same origin,
//! so the page reaches `ws(s)://<its host>/mqtt` without cross-origin rules, and over TLS with
//! the same certificate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// One page: its media type and bytes.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
}

/// The pages by path (`/`, `/app.js`), shared with the gate so pages added later are served.
pub(crate) type PagesCell = Arc<RwLock<HashMap<String, Page>>>;
