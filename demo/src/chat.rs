//! The `Chat` module: `HD_JoinChat` puts the logged-in user into a room and answers with the
//! room's members, after the tracing demo chain in `Login`. A connection is in one room at a
//! time; it leaves it by joining another, by `HD_LeaveChat`, or by disconnecting, and a room
//! is removed with its last member. Names and the number of rooms are capped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use mqrs_runtime::{rpc, rpc_module, App, Session};
use serde::{Deserialize, Serialize};

/// Chat rooms and their members.
pub struct Chat {
    app: App,
    rooms: Mutex<HashMap<String, BTreeSet<String>>>,
    max_rooms: usize,
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

/// The connection's room, from the session the gate keeps.
fn current(session: &Session) -> Option<&str> {
    session.get("room").filter(|r| !r.is_empty())
}

/// Most rooms at once, by default.
pub const MAX_ROOMS: usize = 1_000;

/// Longest room name, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 64;

impl Chat {
    /// The module, calling other modules through `app`.
    pub fn new(app: &App) -> Self {
        Chat::with_max_rooms(app, MAX_ROOMS)
    }

    /// The module with room for at most `max_rooms` rooms at once.
    pub fn with_max_rooms(app: &App, max_rooms: usize) -> Self {
        Chat {
            app: app.clone(),
            rooms: Mutex::new(HashMap::new()),
            max_rooms,
        }
    }

    /// Takes `user` out of `room`; the room goes with its last member.
    fn leave(&self, room: &str, user: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = rooms.get_mut(room) {
            members.remove(user);
            if members.is_empty() {
                rooms.remove(room);
            }
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
        if msg.room_name.chars().count() > MAX_ROOM_NAME_CHARS {
            return Err(format!(
                "roomName is at most {MAX_ROOM_NAME_CHARS} characters"
            ));
        }
        session.span().set_attribute("room", msg.room_name.clone());
        let track: String = self.app.call("Login", "track", &session, ()).await?;
        tracing::debug!(%track, "Login/track answered");
        // One room per connection: joining another leaves the last one.
        if let Some(previous) = current(&session).filter(|r| *r != msg.room_name) {
            self.leave(previous, session.userid());
        }
        let users = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if !rooms.contains_key(&msg.room_name) && rooms.len() >= self.max_rooms {
                return Err(format!(
                    "too many rooms ({}): join an existing one",
                    self.max_rooms
                ));
            }
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

    /// Leaves the connection's room; answers with the room left, if any.
    #[rpc(name = "HD_LeaveChat")]
    async fn leave_chat(&self, mut session: Session) -> Result<Option<String>, String> {
        let Some(room) = current(&session).map(str::to_string) else {
            return Ok(None);
        };
        self.leave(&room, session.userid());
        // The gate merges pushed settings: an empty room means none.
        session.set("room", "");
        self.app.push(&session).await?;
        Ok(Some(room))
    }

    /// Called by the gate when a client connection ends: its user leaves its room.
    #[rpc(name = "OnDisconnect")]
    async fn on_disconnect(&self, session: Session) -> Result<(), String> {
        if let Some(room) = current(&session) {
            self.leave(room, session.userid());
        }
        Ok(())
    }

    /// The room this connection joined last, from the session the gate keeps.
    #[rpc(name = "HD_CurrentRoom")]
    async fn current_room(&self, session: Session) -> Result<Option<String>, String> {
        Ok(current(&session).map(str::to_string))
    }
}
