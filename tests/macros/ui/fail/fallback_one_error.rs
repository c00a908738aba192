//! One broken handler in a module the rest of the crate uses (`add_module`, the client, its
//! `clone`): the handler's error is the only one.
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};

pub struct Login {
    app: App,
}

#[rpc_module]
impl Login {
    #[rpc]
    async fn track(&self, session: Session) -> Result<String, String> {
        let depth = LoginClient::new(&self.app)
            .track2(&session, 2)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("depth {depth}"))
    }

    #[rpc]
    async fn track2(&self, depth: u32) -> Result<u32, String> {
        Ok(depth + 1)
    }
}

async fn caller(app: &App, session: &Session) -> Result<String, RpcError> {
    let client = LoginClient::new(app).clone();
    let depth: u32 = client.track2(session, 1).await?;
    Ok(format!("{} at {depth}", client.track(session).await?))
}

fn main() {
    let app = App::new(Config::default());
    app.add_module(Login { app: app.clone() }).expect("added");
    let _ = caller;
}
