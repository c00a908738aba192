//! The `Chat` module: `HD_JoinChat` puts the logged-in user into a room and answers with the
//! room's members, after the tracing demo chain in `Login`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use mqrs_runtime::{rpc, rpc_module, App, Session};
use serde::{Deserialize, Serialize};

/// Chat rooms and their members.
pub struct Chat {
    app: App,
    rooms: Mutex<HashMap<String, BTreeSet<String>>>,
}

/// Body of `Chat/HD_JoinChat`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinChat {
    /// Room to join.
    #[serde(default)]
    pub room_name: String,
}

/// Reply of `Chat/HD_JoinChat`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinReply {
    /// The room joined.
    pub room_name: String,
    /// Its members, sorted.
    pub users: Vec<String>,
}

/// Most members one room holds in the demo.
const MAX_ROOM_SIZE: usize = 10_000;

impl Chat {
    /// The module, calling other modules through `app`.
    pub fn new(app: &App) -> Self {
        Chat {
            app: app.clone(),
            rooms: Mutex::new(HashMap::new()),
        }
    }
}

#[rpc_module]
impl Chat {
    /// Joins a room; requires a logged-in user.
    #[rpc(name = "HD_JoinChat")]
    async fn join_chat(&self, mut session: Session, msg: JoinChat) -> Result<JoinReply, String> {
        if session.is_guest() {
            return Err("not logged in: call Login/HD_Login first".into());
        }
        if msg.room_name.is_empty() {
            return Err("roomName must be non-empty".into());
        }
        session.span().set_attribute("room", msg.room_name.clone());
        let track: String = self.app.call("Login", "track", &session, ()).await?;
        tracing::debug!(%track, "Login/track answered");
        let users = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let room = rooms.entry(msg.room_name.clone()).or_default();
            if room.len() >= MAX_ROOM_SIZE && !room.contains(session.userid()) {
                return Err(format!("room {} is full", msg.room_name));
            }
            room.insert(session.userid().to_string());
            room.iter().cloned().collect()
        };
        // Remember the room on the connection: later requests carry it in their session.
        session.set("room", msg.room_name.clone());
        self.app.push(&session).await?;
        Ok(JoinReply {
            room_name: msg.room_name,
            users,
        })
    }

    /// The room this connection joined last, from the session the gate keeps.
    #[rpc(name = "HD_CurrentRoom")]
    async fn current_room(&self, session: Session) -> Result<Option<String>, String> {
        Ok(session.get("room").map(str::to_string))
    }
}
