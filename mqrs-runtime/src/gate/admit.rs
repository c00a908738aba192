//! Who may connect, as the app's connect hook (`App::set_on_connect`) says it: what the hook
//! sees of a CONNECT ([`ConnectInfo`]), its answer ([`Admission`]), and the refusals per
//! address ([`Strikes`]) that make an address refused again and again wait longer and longer
//! before its next CONNECT is heard, so guessing passwords is slow.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mqrs_base::sync::Locked;
use rumqttc::mqttbytes::v4::ConnectReturnCode;

use crate::session::Session;

/// A CONNECT as the connect hook sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectInfo {
    /// The client id the client chose (may be empty).
    pub client_id: String,
    /// The user name, when the client sent one.
    pub username: Option<String>,
    /// The password, when the client sent one; its `Debug` shows nothing of it.
    pub password: Option<Password>,
    /// The client's address.
    pub remote: SocketAddr,
    /// How it reached the gate: `tcp`, `tls`, `ws` or `wss`.
    pub network: &'static str,
    /// The session the connection will have (no user yet), carrying the trace of the
    /// `gate CONNECT` span: calls made with it (say to `Login/Authenticate`) nest there.
    pub session: Session,
}

/// A password from a CONNECT: shown by [`Password::expose`] only, never by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub(super) String);

impl Password {
    /// The password's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The connect hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The client connects as a guest, as without a hook.
    Accept,
    /// The client connects with its session bound to this user id: no login call needed.
    AcceptAs(String),
    /// The client is refused with this reason (its MQTT 3.1.1 CONNACK code).
    Refuse(Refusal),
}

/// Why a CONNECT is refused, as MQTT 3.1.1 CONNACK return codes say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Code 4: bad user name or password.
    BadCredentials,
    /// Code 5: not authorized.
    NotAuthorized,
}

impl Refusal {
    pub(super) fn code(self) -> ConnectReturnCode {
        match self {
            Refusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
            Refusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
        }
    }

    pub(super) fn kind(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad_user_name_or_password",
            Refusal::NotAuthorized => "not_authorized",
        }
    }
}

/// The future a connect hook returns.
pub(crate) type Admitting = Pin<Box<dyn Future<Output = Admission> + Send>>;

/// Decides who may connect (see `App::set_on_connect`).
pub(crate) type ConnectHook = Arc<dyn Fn(ConnectInfo) -> Admitting + Send + Sync>;

/// The app's connect hook, if any, shared with the gate so a later `set_on_connect` applies.
pub(crate) type ConnectCell = Arc<RwLock<Option<ConnectHook>>>;

/// Refusals before an address starts to wait.
const FREE_REFUSALS: u32 = 3;
/// The first wait, doubled with each further refusal.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(8);
/// One refusal is forgotten per this much time without another.
const FORGET_AFTER: Duration = Duration::from_secs(30);
/// Addresses remembered at most; past it, those with nothing left to remember go first.
const MAX_ADDRESSES: usize = 10_000;

/// Recent refusals per client address.
#[derive(Default)]
pub(crate) struct Strikes {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Strikes {
    /// How long a CONNECT from `ip` waits before it is heard.
    pub(super) fn wait(&self, ip: IpAddr, now: Instant) -> Duration {
        let n = self.by_ip.locked().get(&ip).map_or(0, |s| live(*s, now));
        match n.checked_sub(FREE_REFUSALS) {
            None => Duration::ZERO,
            Some(k) => FIRST_WAIT
                .saturating_mul(1u32 << k.min(16))
                .min(LONGEST_WAIT),
        }
    }

    /// Counts a refusal of `ip`.
    pub(super) fn refused(&self, ip: IpAddr, now: Instant) {
        let mut map = self.by_ip.locked();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, s| live(*s, now) > 0);
            if map.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let s = map.entry(ip).or_insert((0, now));
        *s = (live(*s, now).saturating_add(1), now);
    }
}

/// Refusals still remembered of `(count, last)` at `now`.
fn live((n, last): (u32, Instant), now: Instant) -> u32 {
    let forgotten = now.saturating_duration_since(last).as_secs() / FORGET_AFTER.as_secs();
    n.saturating_sub(u32::try_from(forgotten).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_keeps_being_refused_waits_longer_and_is_forgiven_in_time() {
        let (s, ip, t0) = (
            Strikes::default(),
            IpAddr::from([10, 0, 0, 1]),
            Instant::now(),
        );
        let waits: Vec<Duration> = (0..8)
            .map(|_| {
                let w = s.wait(ip, t0);
                s.refused(ip, t0);
                w
            })
            .collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 250, 500, 1000, 2000, 4000]);
        for _ in 0..20 {
            s.refused(ip, t0);
        }
        assert_eq!(s.wait(ip, t0), LONGEST_WAIT);
        assert_eq!(s.wait(IpAddr::from([10, 0, 0, 2]), t0), Duration::ZERO);
        // 28 refusals, one forgotten per 30 s quiet: free again once two are left.
        assert!(s.wait(ip, t0 + FORGET_AFTER * 25) > Duration::ZERO);
        assert_eq!(s.wait(ip, t0 + FORGET_AFTER * 26), Duration::ZERO);
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let p = Password("hunter2".into());
        assert_eq!(format!("{p:?}"), "Password(..)");
        assert_eq!(p.expose(), "hunter2");
    }
}
