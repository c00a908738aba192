//! `vis = ..` sets the visibility of the generated client: `pub(crate)` lets handlers take
//! crate-private types without `private_interfaces` firing on the client's methods.
#![deny(private_interfaces)]

use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
use serde::{Deserialize, Serialize};

/// Private to the crate.
#[derive(Serialize, Deserialize)]
struct Note {
    text: String,
}

pub struct Notes;

#[rpc_module(vis = pub(crate))]
impl Notes {
    #[rpc]
    async fn add(&self, _session: Session, note: Note) -> Result<usize, String> {
        Ok(note.text.len())
    }
}

mod inner {
    use super::*;

    pub struct Deep;

    /// Only the parent module sees this client.
    #[rpc_module(name = "Deep", vis = pub(super))]
    impl Deep {
        #[rpc]
        async fn echo(&self, _session: &Session, n: Private) -> Result<Private, String> {
            Ok(n)
        }
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Private(pub(super) u8);
}

fn main() {
    let app = App::new(Config::default());
    app.add_module(Notes).expect("added");
    app.add_module(inner::Deep).expect("added");
    let session = Session::default();
    let note = Note { text: "hi".into() };
    let _ = NotesClient::new(&app).add(&session, note);
    let _ = inner::DeepClient::new(&app).echo(&session, inner::Private(1));
}
