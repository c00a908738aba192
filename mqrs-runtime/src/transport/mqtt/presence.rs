//! The presence table: what each other process announced (its modules, its idempotent
//! handlers), indexed by module so that a call checks its target and picks an instance in
//! O(1), however often processes come and go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqrs_base::sync::Locked;

use super::wire::Announced;
use crate::transport::Target;

/// Most other processes one process keeps track of; announcements of more are refused.
pub(super) const MAX_PROCESSES: usize = 4096;

/// What changed when a presence message was applied.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing: the same words again, or a process that was not known left.
    None,
    /// A process joined or announced other words.
    Joined,
    /// A known process is gone.
    Left,
    /// Refused: [`MAX_PROCESSES`] are known already.
    Full,
}

/// The announced processes, and for each module the servers that run it.
#[derive(Default)]
pub(super) struct Presence {
    servers: HashMap<Arc<str>, Announced>,
    /// Module → the servers announcing it, in no order.
    by_module: HashMap<String, Vec<Arc<str>>>,
    /// Where the next pick starts, so retried calls spread over instances.
    turn: AtomicUsize,
    /// Instances that answered "unavailable" (busy), until when they are passed over.
    busy: Mutex<HashMap<Arc<str>, Instant>>,
    /// Processes known before the connection was lost and not heard of again since: calls go
    /// on picking them while this process reconnects; those still unheard once it is back are
    /// forgotten ([`Presence::forget_unconfirmed`]).
    unconfirmed: std::collections::HashSet<Arc<str>>,
}

/// How long an instance that answered "unavailable" is passed over when others can serve.
pub(super) const BUSY_FOR: Duration = Duration::from_millis(500);

impl Presence {
    /// Applies what `server_id` said: `None` when it is gone.
    pub(super) fn apply(&mut self, server_id: &str, said: Option<Announced>) -> Change {
        if !self.unconfirmed.is_empty() {
            self.unconfirmed.remove(server_id);
        }
        let Some(said) = said else {
            return match self.remove(server_id) {
                true => Change::Left,
                false => Change::None,
            };
        };
        match self.servers.get(server_id) {
            Some(old) if *old == said => return Change::None,
            None if self.servers.len() >= MAX_PROCESSES => return Change::Full,
            _ => {}
        }
        self.remove(server_id);
        let sid: Arc<str> = Arc::from(server_id);
        for m in &said.modules {
            self.by_module
                .entry(m.clone())
                .or_default()
                .push(sid.clone());
        }
        self.servers.insert(sid, said);
        Change::Joined
    }

    /// Forgets `server_id`; false when it was not known.
    fn remove(&mut self, server_id: &str) -> bool {
        let Some(old) = self.servers.remove(server_id) else {
            return false;
        };
        self.busy.locked().remove(server_id);
        for m in &old.modules {
            if let Some(v) = self.by_module.get_mut(m) {
                v.retain(|s| &**s != server_id);
                if v.is_empty() {
                    self.by_module.remove(m);
                }
            }
        }
        true
    }

    /// The connection to the broker was lost: everyone known stays (calls made while this
    /// process reconnects still find their target) until heard of again or forgotten.
    pub(super) fn unconfirm_all(&mut self) {
        self.unconfirmed = self.servers.keys().cloned().collect();
    }

    /// True after a lost connection while someone known then has not been heard of again
    /// (until [`Presence::forget_unconfirmed`] at the latest): the process still knows who
    /// runs what.
    pub(super) fn reconnecting(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    /// This process is back and has heard the retained presence of everyone there: forgets
    /// those not heard of (they left while it was away) and returns them.
    pub(super) fn forget_unconfirmed(&mut self) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self.unconfirmed.drain().collect();
        for sid in &gone {
            self.remove(sid);
        }
        gone
    }

    /// Notes that `server_id` answered "unavailable" (or not in time) at `now`: picks pass
    /// it over for [`BUSY_FOR`] while another instance can serve.
    pub(super) fn busy(&self, server_id: &str, now: Instant) {
        let Some((sid, _)) = self.servers.get_key_value(server_id) else {
            return;
        };
        let mut busy = self.busy.locked();
        // Bounded by the servers known: stale entries go as new ones come.
        busy.retain(|_, until| *until > now);
        busy.insert(sid.clone(), now + BUSY_FOR);
    }

    /// True when some process announced `target` (on its pinned server, if any).
    pub(super) fn runs(&self, target: Target<'_>) -> bool {
        match target.server_id {
            Some(sid) => self
                .servers
                .get(sid)
                .is_some_and(|a| a.modules.iter().any(|m| m == target.module)),
            None => self.by_module.contains_key(target.module),
        }
    }

    /// How many processes announced `module`.
    pub(super) fn instances(&self, module: &str) -> usize {
        self.by_module.get(module).map_or(0, Vec::len)
    }

    /// True when every process running `module` declares `module/method` idempotent.
    pub(super) fn idempotent(&self, module: &str, method: &str) -> bool {
        let Some(servers) = self.by_module.get(module) else {
            return false;
        };
        servers.iter().all(|sid| {
            self.servers.get(sid).is_some_and(|a| {
                a.idempotent
                    .iter()
                    .any(|h| h.split_once('/') == Some((module, method)))
            })
        })
    }

    /// An instance of `module` not in `avoid`, taking turns and passing over busy ones while
    /// another can serve; `None` when there is none. Looks at `avoid.len() + 1` instances
    /// unless some are busy.
    pub(super) fn pick(&self, module: &str, avoid: &[Arc<str>], now: Instant) -> Option<Arc<str>> {
        let servers = self.by_module.get(module)?;
        // A first attempt takes the next turn; a retry looks on from the current one, so that
        // calls retried away from one instance do not all start on it again.
        let start = match avoid.is_empty() {
            true => self.turn.fetch_add(1, Ordering::Relaxed),
            false => self.turn.load(Ordering::Relaxed),
        };
        let mut candidates = (0..servers.len())
            .map(|i| &servers[(start + i) % servers.len()])
            .filter(|s| !avoid.contains(s));
        let first = candidates.next()?;
        let busy = self.busy.locked();
        if busy.is_empty() {
            return Some(first.clone());
        }
        let free = |s: &&Arc<str>| busy.get(*s).is_none_or(|until| *until <= now);
        let pick = std::iter::once(first).chain(candidates).find(free);
        Some(pick.unwrap_or(first).clone())
    }

    /// Every process and its modules, by server id.
    pub(super) fn modules(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.servers
            .iter()
            .map(|(k, v)| (&**k, v.modules.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(modules: &[&str], idempotent: &[&str]) -> Option<Announced> {
        Some(Announced {
            modules: modules.iter().map(|s| s.to_string()).collect(),
            idempotent: idempotent.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn joins_leaves_and_words_again() {
        let mut p = Presence::default();
        assert_eq!(p.apply("a", said(&["Login"], &[])), Change::Joined);
        assert_eq!(p.apply("a", said(&["Login"], &[])), Change::None);
        assert_eq!(p.apply("b", said(&["Login", "Chat"], &[])), Change::Joined);
        assert!(p.runs(Target::module("Chat")));
        assert!(p.runs(Target::on_server("Login", "a")));
        assert!(!p.runs(Target::on_server("Chat", "a")));
        assert_eq!(p.instances("Login"), 2);
        // A stopping process announces no modules: still known, no longer a target.
        assert_eq!(p.apply("b", said(&[], &[])), Change::Joined);
        assert!(!p.runs(Target::module("Chat")));
        assert_eq!(p.instances("Login"), 1);
        assert_eq!(p.apply("b", None), Change::Left);
        assert_eq!(p.apply("b", None), Change::None);
        assert_eq!(p.modules().count(), 1);
    }

    #[test]
    fn restart_storms_do_not_grow_the_table() {
        let mut p = Presence::default();
        for round in 0..1000 {
            let sid = format!("s{}", round % 3);
            p.apply(&sid, said(&["Login", "Chat"], &["Login/track"]));
            if round % 2 == 0 {
                p.apply(&sid, None);
            }
        }
        assert!(p.servers.len() <= 3);
        assert!(p.by_module.values().all(|v| v.len() <= 3));
    }

    #[test]
    fn across_a_reconnection_those_not_heard_again_are_forgotten() {
        let mut p = Presence::default();
        for s in ["a", "b", "c"] {
            p.apply(s, said(&["Login"], &[]));
        }
        assert!(!p.reconnecting());
        p.unconfirm_all();
        assert!(p.reconnecting());
        // While away, calls still find every instance.
        assert_eq!(p.instances("Login"), 3);
        // Back: a's retained presence comes again, b's says it left, c's never comes.
        assert_eq!(p.apply("a", said(&["Login"], &[])), Change::None);
        assert_eq!(p.apply("b", None), Change::Left);
        assert_eq!(p.forget_unconfirmed(), vec![Arc::<str>::from("c")]);
        assert!(!p.reconnecting());
        assert_eq!(p.instances("Login"), 1);
        assert!(p.runs(Target::on_server("Login", "a")));
        // Nothing is pending after: a second pass forgets no one.
        assert!(p.forget_unconfirmed().is_empty());
        assert_eq!(p.instances("Login"), 1);
    }

    #[test]
    fn picks_take_turns_and_avoid_instances_tried() {
        let mut p = Presence::default();
        for s in ["a", "b", "c"] {
            p.apply(s, said(&["Login"], &[]));
        }
        let picks: std::collections::HashSet<_> = (0..3)
            .map(|_| p.pick("Login", &[], Instant::now()).expect("an instance"))
            .collect();
        assert_eq!(picks.len(), 3, "three picks in a row reach three instances");
        let tried: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        for _ in 0..5 {
            assert_eq!(
                p.pick("Login", &tried, Instant::now()).as_deref(),
                Some("c")
            );
        }
        let all: Vec<Arc<str>> = ["a", "b", "c"].map(Arc::from).to_vec();
        assert_eq!(p.pick("Login", &all, Instant::now()), None);
        assert_eq!(p.pick("Chat", &[], Instant::now()), None);
    }

    #[test]
    fn a_busy_instance_is_passed_over_for_a_while_when_another_can_serve() {
        let mut p = Presence::default();
        for s in ["a", "b"] {
            p.apply(s, said(&["Login"], &[]));
        }
        let t = Instant::now();
        p.busy("a", t);
        for _ in 0..6 {
            assert_eq!(p.pick("Login", &[], t).as_deref(), Some("b"));
        }
        // Only the busy one is left: it is tried rather than nothing.
        let b: Vec<Arc<str>> = vec![Arc::from("b")];
        assert_eq!(p.pick("Login", &b, t).as_deref(), Some("a"));
        // Both busy: turns as usual.
        p.busy("b", t);
        let picks: std::collections::HashSet<_> =
            (0..2).filter_map(|_| p.pick("Login", &[], t)).collect();
        assert_eq!(picks.len(), 2);
        // Later, a is back in turn.
        let later = t + BUSY_FOR + Duration::from_millis(1);
        let picks: std::collections::HashSet<_> =
            (0..2).filter_map(|_| p.pick("Login", &[], later)).collect();
        assert_eq!(picks.len(), 2);
        // A process that leaves takes its mark with it; unknown ones are not marked.
        p.apply("a", None);
        p.busy("zz", t);
        assert!(p.busy.locked().keys().all(|k| &**k == "b"));
    }

    #[test]
    fn idempotent_only_when_every_instance_says_so() {
        let mut p = Presence::default();
        p.apply("a", said(&["Login"], &["Login/track"]));
        assert!(p.idempotent("Login", "track"));
        assert!(!p.idempotent("Login", "track2"));
        assert!(!p.idempotent("Chat", "track"));
        // An instance that does not declare it (an older build): not retried.
        p.apply("b", said(&["Login"], &[]));
        assert!(!p.idempotent("Login", "track"));
    }

    #[test]
    fn a_full_table_refuses_newcomers_but_hears_the_known() {
        let mut p = Presence::default();
        for i in 0..MAX_PROCESSES {
            p.apply(&format!("s{i}"), said(&["M"], &[]));
        }
        assert_eq!(p.apply("new", said(&["M"], &[])), Change::Full);
        assert_eq!(p.apply("s1", said(&["M", "N"], &[])), Change::Joined);
        assert_eq!(p.apply("s2", None), Change::Left);
        assert_eq!(p.apply("new", said(&["M"], &[])), Change::Joined);
    }
}
