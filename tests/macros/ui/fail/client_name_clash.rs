//! Handlers may not take the names of the client's own items (`new`, `Clone::clone`); the
//! route can keep the name. Code using the module and its client adds no errors.
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};

pub struct Room;

#[rpc_module]
impl Room {
    #[rpc]
    async fn new(&self, _session: Session, title: String) -> Result<String, String> {
        Ok(title)
    }

    #[rpc]
    async fn clone(&self, _session: Session) -> Result<u32, String> {
        Ok(1)
    }

    /// Fine: a renamed route keeps the Rust name clear of the client's.
    #[rpc(name = "open")]
    async fn open_room(&self, _session: Session) -> Result<(), String> {
        Ok(())
    }
}

async fn caller(app: &App, session: &Session) -> Result<(), mqrs_runtime::RpcError> {
    let client = RoomClient::new(app).clone();
    client.open_room(session).await
}

fn main() {
    let app = App::new(Config::default());
    app.add_module(Room).expect("added");
    let _ = caller;
}
