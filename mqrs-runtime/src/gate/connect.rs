//! One CONNECT before the gate answers it: runs the app's connect hook, if it set one, under
//! a `gate CONNECT` root span, after the wait the address's recent refusals earned; counts
//! and logs a refusal (never with the password).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mqrs_base::sync::RwLocked;
use mqrs_base::text::clip;
use opentelemetry::KeyValue;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};

use super::admit::{Admission, ConnectInfo, Password};
use super::state::Gate;
use crate::session::Session;
use crate::trace::spans;

/// Runs the connect hook, if the app set one, for `connect` from `remote`: the session the
/// connection starts with (bound to a user if the hook said so), or the CONNACK code that
/// refuses it.
pub(super) async fn admit(
    gate: &Gate,
    connect: &Connect,
    remote: SocketAddr,
    network: &'static str,
    session: Session,
) -> Result<Session, ConnectReturnCode> {
    let Some(hook) = gate.on_connect.read_locked().clone() else {
        return Ok(session);
    };
    let wait = gate.strikes.wait(remote.ip(), Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let (username, password) = match &connect.login {
        Some(l) => (
            (!l.username.is_empty()).then(|| l.username.clone()),
            (!l.password.is_empty()).then(|| Password(l.password.clone())),
        ),
        None => (None, None),
    };
    let root = spans::gate_connect(
        &gate.tracer,
        session.facts(),
        [
            KeyValue::new("mqrs.client_id", clip(&connect.client_id, 256).to_string()),
            KeyValue::new(
                "user.name",
                clip(username.as_deref().unwrap_or(""), 256).to_string(),
            ),
        ],
    );
    let info = ConnectInfo {
        client_id: connect.client_id.clone(),
        username,
        password,
        remote,
        network,
        session: session.with_span(&root, gate.tracer.clone()),
    };
    let within = Duration::from_millis(gate.cfg.connect_timeout_ms.max(1));
    let answer = tokio::time::timeout(within, hook(info)).await;
    let refusal = match answer {
        Ok(Admission::Accept) => return Ok(session),
        Ok(Admission::AcceptAs(user)) => {
            let mut s = session;
            s.set_userid(user);
            return Ok(s);
        }
        Ok(Admission::Refuse(r)) => r,
        Err(_) => {
            tracing::warn!(peer = %remote, client_id = %clip(&connect.client_id, 64), within_ms = within.as_millis() as u64, "gate: the connect hook did not answer in time; refusing as server unavailable");
            spans::record_failure(&root, "timeout", || {
                "the connect hook did not answer in time".into()
            });
            return Err(ConnectReturnCode::ServiceUnavailable);
        }
    };
    gate.strikes.refused(remote.ip(), Instant::now());
    let n = gate
        .counters
        .connect_refused
        .fetch_add(1, Ordering::Relaxed);
    spans::record_failure(&root, refusal.kind(), || {
        format!("CONNECT refused: {}", refusal.kind())
    });
    if n.is_power_of_two() || n == 0 {
        tracing::info!(peer = %remote, client_id = %clip(&connect.client_id, 64), user = %clip(connect.login.as_ref().map_or("", |l| l.username.as_str()), 64), reason = refusal.kind(), refused = n + 1, "gate: CONNECT refused");
    } else {
        tracing::debug!(peer = %remote, client_id = %clip(&connect.client_id, 64), reason = refusal.kind(), "gate: CONNECT refused");
    }
    Err(refusal.code())
}
