//! `vis` takes a visibility written out in full; the module stays usable around the error.
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};

pub struct Chat;

#[rpc_module(vis = crate)]
impl Chat {
    #[rpc]
    async fn say(&self, _session: Session, text: String) -> Result<String, String> {
        Ok(text)
    }
}

async fn caller(app: &App, session: &Session) -> Result<String, mqrs_runtime::RpcError> {
    ChatClient::new(app).say(session, "hi".into()).await
}

fn main() {
    let app = App::new(Config::default());
    app.add_module(Chat).expect("added");
    let _ = caller;
}
