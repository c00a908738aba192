//! The README's quick start, compiled by `cargo test` so it cannot go stale.
//! Run: `cargo run -p mqrs-runtime --example quickstart`.

use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
use std::time::Duration;

pub struct Login {
    app: App,
}

#[rpc_module] // module name: "Login"
impl Login {
    #[rpc(name = "HD_Login")] // reachable by clients as Login/HD_Login
    async fn login(&self, mut session: Session, msg: serde_json::Value) -> Result<String, String> {
        let user = msg["userName"].as_str().unwrap_or_default().to_string();
        self.app.bind(&mut session, user.clone()).await?; // the gate remembers the user
        Ok(user)
    }

    #[rpc] // internal: Login/track, by name or by LoginClient::track
    async fn track(&self, session: Session) -> Result<String, String> {
        session.span().set_attribute("track", "track测试"); // a tag on this call's span
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.app
            .call::<_, u32>("Login", "track2", &session, ())
            .await?; // nests one level
        Ok("My is Login Module".into())
    }

    #[rpc] // `&Session` works too
    async fn track2(&self, session: &Session) -> Result<u32, String> {
        session.span().set_attribute("depth", 2);
        Ok(2)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App::new(Config::default());
    app.add_module(Login { app: app.clone() })?;
    app.set_on_request_tracing(|session, _request| !session.is_guest()); // trace logged-in users
    app.run().await?; // until Ctrl-C
    Ok(())
}
