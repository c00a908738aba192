//! The `Login` module: `HD_Login` binds a user to the connection, one connection per user (a
//! user who logs in again elsewhere kicks the older connection, which first receives
//! `Login/OnKick {"reason"}`); `track`, `track2`, `track3` form the call chain of
//! mqantserver's tracing demo. None of them contains span code: `track`
//! logs a line and `track2` waits inside a `tracing` span, which the viewer shows inside their
//! RPC spans.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mqrs_runtime::{rpc, rpc_module, App, Session};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// Handles logins and the tracing demo chain.
pub struct Login {
    app: App,
    /// Each logged-in user's connection (its session), to kick when the user logs in again.
    online: Mutex<HashMap<String, Session>>,
}

/// Users remembered at most; past it the map starts again (a forgotten user's older
/// connection is simply not kicked).
const MAX_ONLINE: usize = 100_000;

/// What a kicked connection receives before it is closed.
pub const ON_KICK: &str = "Login/OnKick";

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Body of `Login/HD_Login`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// User name; any non-empty name is accepted in the demo.
    #[serde(default)]
    pub user_name: String,
    /// Password; any non-empty password is accepted in the demo.
    #[serde(default)]
    pub pass_word: String,
}

/// Reply of `Login/HD_Login`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginReply {
    /// The bound user id.
    pub user_id: String,
}

impl Login {
    /// The module, calling other modules through `app`.
    pub fn new(app: &App) -> Self {
        Login {
            app: app.clone(),
            online: Mutex::new(HashMap::new()),
        }
    }
}

#[rpc_module]
impl Login {
    /// Logs a user in: binds the user name to the client's session at the gate.
    #[rpc(name = "HD_Login")]
    async fn login(&self, mut session: Session, msg: LoginRequest) -> Result<LoginReply, String> {
        if msg.user_name.is_empty() || msg.pass_word.is_empty() {
            return Err("userName and passWord must both be non-empty".into());
        }
        if msg.user_name.chars().count() > MAX_NAME_CHARS {
            return Err(format!("userName is at most {MAX_NAME_CHARS} characters"));
        }
        self.app.bind(&mut session, msg.user_name.clone()).await?;
        let older = {
            let mut online = self.online.lock().unwrap_or_else(|p| p.into_inner());
            if online.len() >= MAX_ONLINE {
                online.clear();
            }
            online.insert(msg.user_name.clone(), session.untraced())
        };
        if let Some(old) = older.filter(|o| o.sessionid() != session.sessionid()) {
            // One connection per user: the older one hears why, then is closed. Either may
            // fail if it is already gone.
            let reason = "logged in from another connection";
            let body = serde_json::json!({ "reason": reason }).to_string();
            let old = old.with_trace_of(&session);
            let _ = self.app.send(&old, ON_KICK, body).await;
            let _ = self.app.kick(&old, reason).await;
        }
        Ok(LoginReply {
            user_id: msg.user_name,
        })
    }

    /// Logs the user out: the connection is anonymous again.
    #[rpc(name = "HD_Logout")]
    async fn logout(&self, mut session: Session) -> Result<String, String> {
        let user = session.userid().to_string();
        self.app.unbind(&mut session).await?;
        Ok(user)
    }

    /// First link of the demo chain.
    #[rpc(idempotent)]
    async fn track(&self, session: Session) -> Result<String, String> {
        session.span().set_attribute("track", "track测试");
        tracing::info!(user = session.userid(), "track called");
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.app
            .call::<_, String>("Login", "track2", &session, ())
            .await?;
        Ok("My is Login Module".into())
    }

    /// Second link: calls `track3` about 69 % of the time.
    #[rpc(idempotent)]
    async fn track2(&self, session: Session) -> Result<String, String> {
        session
            .span()
            .set_attribute("track", "track 第二个测试函数");
        tokio::time::sleep(Duration::from_millis(10))
            .instrument(tracing::info_span!("track2 wait", ms = 10))
            .await;
        if rand::random::<f64>() < 0.69 {
            LoginClient::new(&self.app).track3(&session).await?;
        }
        Ok("My is Login Module".into())
    }

    /// Last link.
    #[rpc(idempotent)]
    async fn track3(&self, session: &Session) -> Result<String, String> {
        session
            .span()
            .set_attribute("track", "track 第三个测试函数");
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok("My is Login Module".into())
    }
}
