//! Every request of every gate connection, whatever was sampled: a compact [`Entry`] per
//! request (time, route, duration, reply size, error, trace id when the trace was kept) in a
//! [`ConnLog`] per connection, bounded per connection and in all, kept a while after the
//! connection closes, and found by session id or by the user id the session logged in as
//! (so a player's guest requests before login are theirs too).
//!
//! ```
//! use std::sync::Arc;
//! use mqrs_base::history::{Entry, History, Limits};
//! use mqrs_base::red::Red;
//!
//! let h = History::new(Limits::default(), Arc::new(Red::default()));
//! let conn = h.open("s1");
//! conn.push(Entry { at_ms: 1_000, dur_us: 250, ..Entry::default() });
//! h.set_user("s1", "liv");
//! assert_eq!(h.by_user("liv").len(), 1);
//! assert_eq!(h.by_session("s1").map(|s| s.entries.len()), Some(1));
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::red::Red;
use crate::sync::Locked;

/// Bounds of a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries one connection keeps (its oldest go first).
    pub per_connection: usize,
    /// Most entries of all connections together.
    pub max_entries: usize,
    /// How long a closed connection's requests are kept, ms.
    pub keep_closed_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_connection: 256,
            max_entries: 200_000,
            keep_closed_ms: 3_600_000,
        }
    }
}

/// One request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// When it arrived, ms since the Unix epoch.
    pub at_ms: u64,
    /// How long the gate took to answer it, µs.
    pub dur_us: u32,
    /// Bytes of the reply (0 when none was asked for).
    pub reply_bytes: u32,
    /// The route's series in the registry ([`crate::red::Series::id`]), or, with the top bit
    /// set, a route read back from disk (see [`RESTORED`]).
    pub series: u32,
    /// The trace id (big-endian bytes) when the trace was kept; zeros when not.
    pub trace_id: [u8; 16],
    /// `error.type` and message, when it failed.
    pub error: Option<Box<(Box<str>, Box<str>)>>,
}

impl Entry {
    /// The trace id as a number; 0 when the trace was not kept.
    pub fn trace(&self) -> u128 {
        u128::from_be_bytes(self.trace_id)
    }
}

/// What an entry costs, beside an error's text.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// The bit of [`Entry::series`] that marks a route read back from disk: the rest is its place
/// among the routes so read.
pub const RESTORED: u32 = 1 << 31;

/// Most routes read back from disk that are told apart; later ones are named `?`.
const MAX_RESTORED: usize = 4096;

/// The requests of one connection.
#[derive(Debug)]
pub struct ConnLog {
    session_id: Box<str>,
    inner: Mutex<Conn>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Conn {
    user_id: Option<Box<str>>,
    entries: VecDeque<Entry>,
    closed_at_ms: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    entries: AtomicUsize,
}

impl ConnLog {
    /// Adds a request; past a bound, the connection's oldest entry makes room.
    pub fn push(&self, e: Entry) {
        if self.shared.limits.per_connection == 0 {
            return;
        }
        let mut g = self.inner.locked();
        let full = g.entries.len() >= self.shared.limits.per_connection
            || (self.shared.entries.load(Relaxed) >= self.shared.limits.max_entries
                && !g.entries.is_empty());
        if full {
            g.entries.pop_front();
        } else {
            self.shared.entries.fetch_add(1, Relaxed);
        }
        g.entries.push_back(e);
    }

    /// Marks the connection closed at `at_ms`: its entries are kept for
    /// [`Limits::keep_closed_ms`] more.
    pub fn close(&self, at_ms: u64) {
        self.inner.locked().closed_at_ms = Some(at_ms);
    }

    /// Its session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
}

/// One connection's requests as read.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRead {
    /// The session id.
    pub session_id: String,
    /// The user it logged in as, if it did.
    pub user_id: Option<String>,
    /// When it closed, ms; `None` while open.
    pub closed_at_ms: Option<u64>,
    /// Its requests, oldest first, with their routes by name.
    pub entries: Vec<(Entry, Arc<str>)>,
}

/// Every connection's requests.
#[derive(Debug)]
pub struct History {
    shared: Arc<Shared>,
    conns: Mutex<Index>,
    red: Arc<Red>,
    /// Routes of entries read back from disk, by their number ([`RESTORED`]).
    restored: Mutex<Vec<Arc<str>>>,
}

#[derive(Debug, Default)]
struct Index {
    by_session: HashMap<Box<str>, Arc<ConnLog>>,
    by_user: HashMap<Box<str>, Vec<Box<str>>>,
}

/// How much a history holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Connections held, open or closed.
    pub connections: usize,
    /// Entries held.
    pub entries: usize,
    /// Bytes they take, beside error texts.
    pub bytes: usize,
}

impl History {
    /// An empty history within `limits`, naming routes from `red`.
    pub fn new(limits: Limits, red: Arc<Red>) -> History {
        History {
            shared: Arc::new(Shared {
                limits,
                entries: AtomicUsize::new(0),
            }),
            conns: Mutex::default(),
            red,
            restored: Mutex::default(),
        }
    }

    /// Its bounds.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// The log of the connection with `session_id`, made if new (a reconnect with the same
    /// session id goes on in the same log).
    pub fn open(&self, session_id: &str) -> Arc<ConnLog> {
        let mut idx = self.conns.locked();
        if let Some(c) = idx.by_session.get(session_id) {
            c.inner.locked().closed_at_ms = None;
            return c.clone();
        }
        let log = Arc::new(ConnLog {
            session_id: session_id.into(),
            inner: Mutex::default(),
            shared: self.shared.clone(),
        });
        idx.by_session.insert(session_id.into(), log.clone());
        log
    }

    /// Ties the session to `user_id` (its requests before too); empty unties it.
    pub fn set_user(&self, session_id: &str, user_id: &str) {
        let mut idx = self.conns.locked();
        let Some(log) = idx.by_session.get(session_id).cloned() else {
            return;
        };
        let before = std::mem::replace(
            &mut log.inner.locked().user_id,
            (!user_id.is_empty()).then(|| user_id.into()),
        );
        if let Some(b) = before {
            if let Some(v) = idx.by_user.get_mut(&b) {
                v.retain(|s| **s != *session_id);
                if v.is_empty() {
                    idx.by_user.remove(&b);
                }
            }
        }
        if !user_id.is_empty() {
            let v = idx.by_user.entry(user_id.into()).or_default();
            if !v.iter().any(|s| **s == *session_id) {
                v.push(session_id.into());
            }
        }
    }

    /// The requests of the session `session_id`.
    pub fn by_session(&self, session_id: &str) -> Option<SessionRead> {
        let log = self.conns.locked().by_session.get(session_id).cloned()?;
        Some(self.read(&log))
    }

    /// The requests of every session that logged in as `user_id`, oldest session first.
    pub fn by_user(&self, user_id: &str) -> Vec<SessionRead> {
        let logs: Vec<Arc<ConnLog>> = {
            let idx = self.conns.locked();
            idx.by_user
                .get(user_id)
                .map(|v| {
                    v.iter()
                        .filter_map(|s| idx.by_session.get(s).cloned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut out: Vec<SessionRead> = logs.iter().map(|l| self.read(l)).collect();
        out.sort_by_key(|s| s.entries.first().map_or(u64::MAX, |(e, _)| e.at_ms));
        out
    }

    fn read(&self, log: &ConnLog) -> SessionRead {
        let g = log.inner.locked();
        let mut names: HashMap<u32, Arc<str>> = HashMap::new();
        let entries = g
            .entries
            .iter()
            .map(|e| {
                let name = names
                    .entry(e.series)
                    .or_insert_with(|| self.route_name(e.series))
                    .clone();
                (e.clone(), name)
            })
            .collect();
        SessionRead {
            session_id: log.session_id.to_string(),
            user_id: g.user_id.as_deref().map(String::from),
            closed_at_ms: g.closed_at_ms,
            entries,
        }
    }

    fn route_name(&self, series: u32) -> Arc<str> {
        let name = if series & RESTORED != 0 {
            let i = (series & !RESTORED) as usize;
            self.restored.locked().get(i).cloned()
        } else {
            self.red
                .series_by_id(series)
                .map(|s| s.key().operation.clone())
        };
        name.unwrap_or_else(|| Arc::from("?"))
    }

    /// The number of a route read back from disk.
    fn restored_id(&self, name: &Arc<str>) -> u32 {
        let mut r = self.restored.locked();
        let i = match r.iter().position(|n| n == name) {
            Some(i) => i,
            None if r.len() < MAX_RESTORED => {
                r.push(name.clone());
                r.len() - 1
            }
            None => MAX_RESTORED,
        };
        RESTORED | i as u32
    }

    /// Drops connections closed longer than the keep time before `now_ms`, and, while over
    /// the entry bound, the longest-closed ones.
    pub fn sweep(&self, now_ms: u64) {
        let keep = self.shared.limits.keep_closed_ms;
        let mut idx = self.conns.locked();
        let mut closed: Vec<(u64, Box<str>)> = idx
            .by_session
            .iter()
            .filter_map(|(s, l)| Some((l.inner.locked().closed_at_ms?, s.clone())))
            .collect();
        closed.sort();
        for (at, s) in closed {
            let over = self.shared.entries.load(Relaxed) > self.shared.limits.max_entries;
            if at.saturating_add(keep) > now_ms && !over {
                break;
            }
            if let Some(log) = idx.by_session.remove(&s) {
                let g = log.inner.locked();
                self.shared.entries.fetch_sub(g.entries.len(), Relaxed);
                if let Some(u) = &g.user_id {
                    if let Some(v) = idx.by_user.get_mut(u) {
                        v.retain(|x| *x != s);
                        if v.is_empty() {
                            idx.by_user.remove(u);
                        }
                    }
                }
            }
        }
    }

    /// How much it holds.
    pub fn stats(&self) -> HistoryStats {
        let entries = self.shared.entries.load(Relaxed);
        HistoryStats {
            connections: self.conns.locked().by_session.len(),
            entries,
            bytes: entries * ENTRY_BYTES,
        }
    }

    /// Every connection's read, for saving.
    pub fn all(&self) -> Vec<SessionRead> {
        let logs: Vec<Arc<ConnLog>> = self.conns.locked().by_session.values().cloned().collect();
        logs.iter().map(|l| self.read(l)).collect()
    }

    /// Puts back a connection read before (from disk): closed at its close time, or now.
    pub fn restore(&self, s: SessionRead, now_ms: u64) {
        let log = self.open(&s.session_id);
        for (mut e, name) in s.entries {
            e.series = self.restored_id(&name);
            log.push(e);
        }
        log.close(s.closed_at_ms.unwrap_or(now_ms));
        if let Some(u) = &s.user_id {
            self.set_user(&s.session_id, u);
        }
    }
}

/// The file format's first bytes.
const MAGIC: &[u8; 8] = b"MQRSHIS1";

impl History {
    /// Writes every connection's requests to `path` (through a file beside it, renamed over
    /// it, so a crash leaves the old file or the new one).
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(64 + self.stats().entries * 64);
        out.extend_from_slice(MAGIC);
        for s in self.all() {
            put_str(&mut out, &s.session_id);
            put_str(&mut out, s.user_id.as_deref().unwrap_or(""));
            out.extend_from_slice(&s.closed_at_ms.unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&(s.entries.len() as u32).to_le_bytes());
            for (e, route) in &s.entries {
                out.extend_from_slice(&e.at_ms.to_le_bytes());
                out.extend_from_slice(&e.dur_us.to_le_bytes());
                out.extend_from_slice(&e.reply_bytes.to_le_bytes());
                out.extend_from_slice(&e.trace_id);
                put_str(&mut out, route);
                let (kind, text) = e.error.as_deref().map_or(("", ""), |(k, t)| (k, t));
                put_str(&mut out, kind);
                put_str(&mut out, text);
            }
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads back what [`History::save`] wrote to `path` (nothing when there is no file);
    /// connections open when saved count as closed `now_ms`. The error says where the file is
    /// not one: what was read before it is kept.
    pub fn load(&self, path: &std::path::Path, now_ms: u64) -> std::io::Result<usize> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut r = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("not a request history file"))?;
        let mut n = 0;
        while !r.is_empty() {
            let session_id = get_str(&mut r).ok_or_else(|| bad("cut short in a session"))?;
            let user = get_str(&mut r).ok_or_else(|| bad("cut short in a session"))?;
            let closed = get_u64(&mut r).ok_or_else(|| bad("cut short in a session"))?;
            let count = get_u32(&mut r).ok_or_else(|| bad("cut short in a session"))?;
            let mut entries = Vec::new();
            for _ in 0..count {
                let e = (|| {
                    let at_ms = get_u64(&mut r)?;
                    let dur_us = get_u32(&mut r)?;
                    let reply_bytes = get_u32(&mut r)?;
                    let trace_id: [u8; 16] = take(&mut r, 16)?.try_into().ok()?;
                    let route: Arc<str> = Arc::from(get_str(&mut r)?);
                    let (kind, text) = (get_str(&mut r)?, get_str(&mut r)?);
                    let error = (!kind.is_empty()).then(|| Box::new((kind.into(), text.into())));
                    Some((
                        Entry {
                            at_ms,
                            dur_us,
                            reply_bytes,
                            series: RESTORED,
                            trace_id,
                            error,
                        },
                        route,
                    ))
                })()
                .ok_or_else(|| bad("cut short in an entry"))?;
                entries.push(e);
            }
            n += entries.len();
            self.restore(
                SessionRead {
                    session_id,
                    user_id: (!user.is_empty()).then_some(user),
                    closed_at_ms: (closed != 0).then_some(closed),
                    entries,
                },
                now_ms,
            );
        }
        Ok(n)
    }
}

/// Longest text kept in the file; longer is cut at a character boundary.
const MAX_TEXT: usize = 1024;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = crate::text::clip(s, MAX_TEXT);
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Some(a)
}

fn get_u64(r: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(r, 8)?.try_into().ok()?))
}

fn get_u32(r: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(take(r, 4)?.try_into().ok()?))
}

fn get_str(r: &mut &[u8]) -> Option<String> {
    let n = u16::from_le_bytes(take(r, 2)?.try_into().ok()?) as usize;
    String::from_utf8(take(r, n)?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64) -> Entry {
        Entry {
            at_ms,
            ..Entry::default()
        }
    }

    #[test]
    fn bounded_per_connection_and_in_all() {
        let h = History::new(
            Limits {
                per_connection: 3,
                max_entries: 5,
                keep_closed_ms: 1_000,
            },
            Arc::new(Red::default()),
        );
        let a = h.open("a");
        for t in 0..10 {
            a.push(entry(t));
        }
        let got: Vec<u64> = h
            .by_session("a")
            .expect("a")
            .entries
            .iter()
            .map(|(e, _)| e.at_ms)
            .collect();
        assert_eq!(got, [7, 8, 9]);
        let b = h.open("b");
        for t in 0..10 {
            b.push(entry(t));
        }
        assert_eq!(h.stats().entries, 5, "the total bound holds");
        assert_eq!(h.by_session("b").expect("b").entries.len(), 2);
        // Closed connections go after the keep time.
        a.close(100);
        h.sweep(500);
        assert!(h.by_session("a").is_some());
        h.sweep(1_100);
        assert!(h.by_session("a").is_none());
        assert_eq!(h.stats().entries, 2);
    }

    #[test]
    fn saved_and_read_back_and_a_broken_file_is_refused_without_panic() {
        let red = Arc::new(Red::default());
        let series = red
            .table(crate::red::Kind::Server, "Gate")
            .series("Chat/HD_Say", || "gate Chat/HD_Say".into());
        let h = History::new(Limits::default(), red.clone());
        let c = h.open("s1");
        c.push(Entry {
            at_ms: 7,
            dur_us: 120,
            reply_bytes: 33,
            series: series.id(),
            trace_id: 0xabcu128.to_be_bytes(),
            error: Some(Box::new(("timeout".into(), "too slow".into()))),
        });
        h.set_user("s1", "liv");
        let dir = std::env::temp_dir().join(format!("mqrs-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("history.bin");
        h.save(&path).expect("saved");
        let back = History::new(Limits::default(), Arc::new(Red::default()));
        assert_eq!(back.load(&path, 99).expect("read"), 1);
        let s = &back.by_user("liv")[0];
        assert_eq!(s.closed_at_ms, Some(99));
        assert_eq!(&*s.entries[0].1, "gate Chat/HD_Say");
        assert_eq!(
            (s.entries[0].0.trace(), s.entries[0].0.reply_bytes),
            (0xabc, 33)
        );
        assert_eq!(ENTRY_BYTES, 48);
        let bytes = std::fs::read(&path).expect("file");
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).expect("write");
            let _ = History::new(Limits::default(), Arc::new(Red::default())).load(&path, 1);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_session_belongs_to_the_user_it_logged_in_as_guest_requests_included() {
        let h = History::new(Limits::default(), Arc::new(Red::default()));
        let s = h.open("s1");
        s.push(entry(1));
        h.set_user("s1", "liv");
        s.push(entry(2));
        let later = h.open("s2");
        later.push(entry(5));
        h.set_user("s2", "liv");
        let all = h.by_user("liv");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].entries.len(), 2, "the guest request too");
        h.set_user("s1", "max");
        assert_eq!(h.by_user("liv").len(), 1);
        assert_eq!(h.by_user("max")[0].session_id, "s1");
    }
}
