//! Calls of idempotent handlers, retried: each attempt pinned to an instance not tried yet
//! (the transport takes turns over the instances it knows), given its share of what is left of
//! the deadline (or, hedged, sent beside a slow one), and recorded as its own CLIENT span tagged
//! with its attempt number and instance. Handlers not declared idempotent are never sent twice.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::deadline::Deadline;
use crate::error::RpcError;
use crate::transport::{Target, Transport};

/// Most attempts `[rpc] max_attempts` may ask for.
pub(super) const MAX_ATTEMPTS: u32 = 10;

/// Span attribute: the attempt's number, from 1.
pub(super) const ATTEMPT: &str = "mqrs.rpc.attempt";
/// Span attribute: the server id of the instance an attempt was sent to.
pub(super) const INSTANCE: &str = "mqrs.server.id";
/// Span attribute, true on an attempt dropped because another answered first (hedging).
pub(super) const CANCELLED: &str = "mqrs.rpc.cancelled";

/// One attempt to send: its number, the instance it goes to, and its own deadline.
pub(super) struct Attempt {
    /// From 1.
    pub(super) number: usize,
    /// The server id it is pinned to.
    pub(super) instance: Arc<str>,
    /// When it starts.
    pub(super) now: Instant,
    /// Its share of what is left of the call's deadline (all of it for the last).
    pub(super) deadline: Deadline,
}

/// How many attempts a call of `target`/`method` may make, at most `max`: 1 unless the
/// handler is idempotent (`idempotent`, or as every instance serving it declares), the target
/// is not pinned to one server, and `transport` knows at least two instances to choose from.
pub(super) fn attempts(
    transport: &dyn Transport,
    max: usize,
    target: Target<'_>,
    method: &str,
    idempotent: bool,
) -> usize {
    if max < 2 || target.server_id.is_some() {
        return 1;
    }
    let n = transport.instances(target.module);
    if n < 2 || !(idempotent || transport.idempotent(target.module, method)) {
        return 1;
    }
    max.min(n)
}

/// How a retried call spreads over instances.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Most attempts, each on another instance.
    pub(super) attempts: usize,
    /// Sends the next attempt when the ones in flight have not answered in this time (the
    /// first answer wins, the others are dropped); `None`: one attempt at a time.
    pub(super) hedge_after: Option<Duration>,
}

/// Runs `send` for instances of `module` in turn until one answers, a failure that another
/// instance would not change comes back, the attempts are spent, or `deadline` passes. One at
/// a time, each with its share of the time left; or, hedged, the next one also when those in
/// flight are slow, each with all of the time left.
pub(super) async fn run<F, Fut>(
    transport: &dyn Transport,
    (module, method): (&str, &str),
    start: Instant,
    deadline: Deadline,
    plan: Plan,
    mut send: F,
) -> Result<Vec<u8>, RpcError>
where
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, RpcError>>,
{
    let mut attempts = plan.attempts;
    let mut tried: Vec<Arc<str>> = Vec::with_capacity(attempts + 1);
    // An attempt that failed because this process lost its own link goes again to the same
    // instance, once, not counted: the instance is not to blame.
    let mut again: Option<Arc<str>> = None;
    let mut running = FuturesUnordered::new();
    let mut last = None;
    let hedge = tokio::time::sleep(plan.hedge_after.unwrap_or(Duration::from_secs(86_400)));
    tokio::pin!(hedge);
    // No instance left to try, or no time: nothing more is launched.
    let mut exhausted = false;
    loop {
        // Every turn of the loop follows a start, a failure or a slow attempt: the next one goes.
        if tried.len() < attempts {
            let now = Instant::now();
            let left = deadline.since(now);
            let instance = match left.is_zero() {
                true => None,
                false => again.take().or_else(|| transport.pick(module, &tried)),
            };
            if let Some(instance) = instance {
                let number = tried.len() + 1;
                let this = match plan.hedge_after {
                    Some(after) => {
                        hedge
                            .as_mut()
                            .reset(tokio::time::Instant::from_std(now + after));
                        deadline
                    }
                    // An attempt that hangs leaves the next ones their share of the time.
                    None => match u32::try_from(attempts - number + 1).unwrap_or(1) {
                        1 => deadline,
                        n => Deadline::after_from(now, left / n),
                    },
                };
                tried.push(instance.clone());
                let attempt = send(Attempt {
                    number,
                    instance: instance.clone(),
                    now,
                    deadline: this,
                });
                running.push(async move { (instance, number, attempt.await) });
            } else {
                exhausted = true;
            }
        }
        let hedging = plan.hedge_after.is_some() && !exhausted && tried.len() < attempts;
        let (instance, number, result) = tokio::select! {
            Some(done) = running.next() => done,
            () = &mut hedge, if hedging && !running.is_empty() => continue,
            else => break,
        };
        match result {
            Err(e) if another_might_answer(&e) => {
                // Lost with this process's own broker connection: the instance is not to
                // blame, so it gets the call again, once, not counted.
                let own_link = matches!(e, RpcError::Unreachable { .. })
                    && !transport.linked()
                    && attempts == plan.attempts;
                if own_link {
                    attempts += 1;
                    again = Some(instance.clone());
                } else if matches!(e, RpcError::Timeout { .. }) {
                    // Hung or overloaded: the next calls start elsewhere for a while.
                    transport.pass_over(&instance);
                }
                tracing::debug!(
                    module,
                    method,
                    instance = &*instance,
                    attempt = number,
                    error = %e,
                    own_link,
                    "attempt failed; trying again"
                );
                last = Some(e);
                if running.is_empty() && tried.len() >= attempts {
                    break;
                }
            }
            // The first answer wins; attempts still in flight are dropped with `running`.
            r => return r,
        }
    }
    Err(last.unwrap_or_else(|| RpcError::Timeout {
        method: format!("{module}/{method}"),
        timeout: deadline.since(start),
    }))
}

/// True when the failure belongs to the instance tried, not to the call: no reply in its
/// time, the instance gone or unreachable, or busy. A handler's own error, bad arguments or a
/// deadline already spent would be the same anywhere.
fn another_might_answer(e: &RpcError) -> bool {
    matches!(
        e,
        RpcError::Timeout { .. }
            | RpcError::Unreachable { .. }
            | RpcError::Unavailable(_)
            | RpcError::UnknownModule(_)
    )
}

#[cfg(test)]
mod tests {
    use super::another_might_answer;
    use crate::error::RpcError;

    #[test]
    fn only_failures_of_the_instance_are_retried() {
        let timeout = RpcError::Timeout {
            method: "Login/track".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        let gone = RpcError::Unreachable {
            target: "Login@a".into(),
            reason: "left".into(),
        };
        for e in [
            timeout,
            gone,
            RpcError::Unavailable("busy".into()),
            RpcError::UnknownModule("Login@a".into()),
        ] {
            assert!(another_might_answer(&e), "{e}");
        }
        for e in [
            RpcError::Handler("no such user".into()),
            RpcError::DeadlineExceeded("Login/track".into()),
            RpcError::BadArgs {
                method: "Login/track".into(),
                reason: "x".into(),
            },
            RpcError::UnknownMethod {
                module: "Login".into(),
                method: "x".into(),
            },
            RpcError::Panicked("Login/track".into()),
        ] {
            assert!(!another_might_answer(&e), "{e}");
        }
    }
}
