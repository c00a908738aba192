//! The `Chat` module: `HD_JoinChat` puts the logged-in user into a room and answers with the
//! room's members, after the tracing demo chain in `Login`; `HD_Say` sends `Chat/OnSay` to
//! every member, whichever gate holds them, and the room hears `Chat/OnJoin` and
//! `Chat/OnLeave` as people come and go. A connection is in one room at a time; it leaves it by
//! joining another, by `HD_LeaveChat`, or by disconnecting, and a room is removed with its
//! last member. Names, texts, the pace of messages and the number of rooms are capped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqrs_runtime::{rpc, rpc_module, App, Session};
use serde::{Deserialize, Serialize};

/// A room's members: each user's connection (its session, untraced).
type Members = BTreeMap<String, Session>;

/// Chat rooms and their members.
pub struct Chat {
    app: App,
    rooms: Mutex<HashMap<String, Members>>,
    max_rooms: usize,
    say_per_second: u32,
    /// Messages each connection said in its current second.
    said: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Body of `Chat/HD_Say`.
#[derive(Debug, Deserialize)]
pub struct Say {
    /// What to say.
    #[serde(default)]
    pub text: String,
}

/// What members of a room receive on `Chat/OnSay`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OnSay {
    /// The room.
    pub room: String,
    /// Who said it.
    pub from: String,
    /// What was said.
    pub text: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The trace of the `HD_Say` that sent it, when traced (the chat page links to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// What members of a room receive on `Chat/OnJoin` and `Chat/OnLeave`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Presence {
    /// The room.
    pub room: String,
    /// Who came or went.
    pub user: String,
}

/// Reply of `Chat/HD_Say`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SayReply {
    /// Members whose connection took the message.
    pub delivered: usize,
}

/// Longest text of one message, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Messages one connection may say per second, by default.
pub const SAY_PER_SECOND: u32 = 5;

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
            say_per_second: SAY_PER_SECOND,
            said: Mutex::new(HashMap::new()),
        }
    }

    /// The same module letting each connection say at most `n` messages a second.
    pub fn say_per_second(mut self, n: u32) -> Self {
        self.say_per_second = n;
        self
    }

    /// Takes the connection of `session` out of `room` (if it is still the one there for its
    /// user) and tells the others; the room goes with its last member.
    async fn leave(&self, room: &str, session: &Session) {
        let others: Vec<Session> = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let Some(members) = rooms.get_mut(room) else {
                return;
            };
            let user = session.userid();
            if members.get(user).map(Session::sessionid) != Some(session.sessionid()) {
                return;
            }
            members.remove(user);
            let others: Vec<Session> = members.values().cloned().collect();
            if others.is_empty() {
                rooms.remove(room);
            }
            others
        };
        let note = Presence {
            room: room.to_string(),
            user: session.userid().to_string(),
        };
        self.tell(session, room, &others, "Chat/OnLeave", &note)
            .await;
    }

    /// Sends `body` on `topic` to `to`, in the trace of `session`; members found gone leave
    /// `room`. Answers how many got it.
    async fn tell(
        &self,
        session: &Session,
        room: &str,
        to: &[Session],
        topic: &str,
        body: &impl Serialize,
    ) -> usize {
        if to.is_empty() {
            return 0;
        }
        let body = serde_json::to_vec(body).unwrap_or_default();
        match self.app.send_batch(session, to, topic, body).await {
            Ok(d) => {
                if !d.gone.is_empty() {
                    let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(members) = rooms.get_mut(room) {
                        members
                            .retain(|_, s| !d.gone.iter().any(|g| g.session_id == s.sessionid()));
                        if members.is_empty() {
                            rooms.remove(room);
                        }
                    }
                }
                d.delivered
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, "chat: message not sent");
                0
            }
        }
    }

    /// Counts one message of `session`'s connection; false past the pace allowed.
    fn may_say(&self, session: &Session) -> bool {
        let now = Instant::now();
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if said.len() > 10_000 {
            said.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(1));
        }
        let e = said
            .entry(session.sessionid().to_string())
            .or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(1) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.say_per_second
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            self.leave(previous, &session).await;
        }
        let (users, others) = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if !rooms.contains_key(&msg.room_name) && rooms.len() >= self.max_rooms {
                return Err(format!(
                    "too many rooms ({}): join an existing one",
                    self.max_rooms
                ));
            }
            let room = rooms.entry(msg.room_name.clone()).or_default();
            if room.len() >= MAX_ROOM_SIZE && !room.contains_key(session.userid()) {
                return Err(format!("room {} is full", msg.room_name));
            }
            let before = room.insert(session.userid().to_string(), session.untraced());
            let others: Vec<Session> = match before {
                // Joining again from the same connection tells no one.
                Some(b) if b.sessionid() == session.sessionid() => Vec::new(),
                _ => room
                    .iter()
                    .filter(|(u, _)| *u != session.userid())
                    .map(|(_, s)| s.clone())
                    .collect(),
            };
            (room.keys().cloned().collect::<Vec<_>>(), others)
        };
        let note = Presence {
            room: msg.room_name.clone(),
            user: session.userid().to_string(),
        };
        self.tell(&session, &msg.room_name, &others, "Chat/OnJoin", &note)
            .await;
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
        self.leave(&room, &session).await;
        // The gate merges pushed settings: an empty room means none.
        session.set("room", "");
        self.app.push(&session).await?;
        Ok(Some(room))
    }

    /// Called by the gate when a client connection ends: its user leaves its room.
    #[rpc(name = "OnDisconnect")]
    async fn on_disconnect(&self, session: Session) -> Result<(), String> {
        if let Some(room) = current(&session) {
            self.leave(room, &session).await;
        }
        self.said
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session.sessionid());
        Ok(())
    }

    /// Says `text` to the connection's room: every member (the sender too) receives
    /// `Chat/OnSay`, whichever gate holds them. At most [`MAX_TEXT_BYTES`], and a few messages
    /// a second per connection: past either, an error says so.
    #[rpc(name = "HD_Say")]
    async fn say(&self, session: Session, msg: Say) -> Result<SayReply, String> {
        let Some(room) = current(&session).map(str::to_string) else {
            return Err("not in a room: call Chat/HD_JoinChat first".into());
        };
        if msg.text.trim().is_empty() {
            return Err("text must be non-empty".into());
        }
        if msg.text.len() > MAX_TEXT_BYTES {
            return Err(format!(
                "text is {} bytes; at most {MAX_TEXT_BYTES}",
                msg.text.len()
            ));
        }
        if !self.may_say(&session) {
            return Err(format!(
                "too fast: at most {} messages a second",
                self.say_per_second
            ));
        }
        session.span().set_attribute("room", room.clone());
        let members: Vec<Session> = {
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms
                .get(&room)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        let note = OnSay {
            room: room.clone(),
            from: session.userid().to_string(),
            text: msg.text,
            at: now_ms(),
            trace: session
                .span()
                .is_recording()
                .then(|| session.trace_id())
                .flatten(),
        };
        let delivered = self
            .tell(&session, &room, &members, "Chat/OnSay", &note)
            .await;
        Ok(SayReply { delivered })
    }

    /// The room this connection joined last, from the session the gate keeps.
    #[rpc(name = "HD_CurrentRoom", idempotent)]
    async fn current_room(&self, session: Session) -> Result<Option<String>, String> {
        Ok(current(&session).map(str::to_string))
    }
}
