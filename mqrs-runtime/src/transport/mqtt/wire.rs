//! The wire convention of calls through an MQTT 5 broker, so that a service in any language can
//! join (docs/wire-protocol.md says the same for humans):
//!
//! - Request topic `mqrs/call/{Module}/{method}` reaches any instance of a module (each
//!   subscribes with the shared subscription `$share/{Module}/mqrs/call/{Module}/+`, so the
//!   broker gives each call to one of them); `mqrs/call/{Module}@{serverId}/{method}` reaches
//!   one instance (it subscribes to `mqrs/call/{Module}@{serverId}/+`).
//! - Request payload: JSON `{"session": {..}, "args": [..]}`; the session is
//!   [`Session`]'s serde form, with its W3C `traceparent`.
//! - Request properties: `response_topic` (absent for fire-and-forget; under `mqrs/reply/`, at
//!   most 256 bytes), `correlation_data` (8 bytes chosen by the caller, at most 64 taken; a
//!   request asking for other is refused unserved), `message_expiry_interval` (the seconds
//!   left before the deadline, rounded up, so a broker drops stale requests), and the user
//!   properties `traceparent` / `tracestate` (named as in the W3C trace-context-mqtt draft) and
//!   `mqrs-timeout-ms` (milliseconds left before the deadline when sent).
//! - Reply: published on the response topic with the same correlation data; payload JSON
//!   `{"ok": <reply>}` or `{"err": {"kind": .., "detail": ..}}` ([`RpcError`]'s serde form).
//!   When the callee keeps its part of a trace the sampler skipped (flags `00`) because a span
//!   failed or was slow, the reply has the user property `mqrs-kept` = `error` or `slow`, and
//!   the caller keeps its part too.
//! - Presence: each process publishes, retained, `mqrs/presence/{serverId}` with payload
//!   `{"modules": ["Login", ..], "idempotent": ["Login/track", ..]}` when it connects (the
//!   handlers it declares safe to run twice, which callers may retry on another instance; the
//!   key may be absent), `{"modules": []}` when it starts stopping (it finishes what it holds),
//!   and an empty retained payload (its last will, or at the end of a clean stop) when it is
//!   gone; everyone subscribes `mqrs/presence/+`. A call to a module that no process announces
//!   fails at once as "unknown module" instead of waiting for its deadline, and a call waiting
//!   on one instance fails at once when that instance is gone.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::deadline::Deadline;
use crate::error::RpcError;
pub(crate) use crate::server::Announced;
use crate::session::{Session, SessionIn};
use crate::trace::sampling::KeepReason;
use crate::transport::Target;

/// Prefix of every request topic.
pub const CALL_PREFIX: &str = "mqrs/call/";
/// Prefix of every reply topic.
pub const REPLY_PREFIX: &str = "mqrs/reply/";
/// Prefix of the presence topics.
pub const PRESENCE_PREFIX: &str = "mqrs/presence/";
/// Prefix of the topic a process sends itself a message on once subscribed: when it comes
/// back, the retained presence of the others (queued before it) has arrived.
pub const SYNC_PREFIX: &str = "mqrs/sync/";
/// User property with the milliseconds left before the call's deadline.
pub const TIMEOUT_PROPERTY: &str = "mqrs-timeout-ms";

/// The request topic of a call.
pub fn call_topic(target: Target<'_>, method: &str) -> String {
    format!("{CALL_PREFIX}{target}/{method}")
}

/// The subscriptions an instance of `module` on server `server_id` holds.
pub fn call_subscriptions(module: &str, server_id: &str) -> [String; 2] {
    [
        format!("$share/{module}/{CALL_PREFIX}{module}/+"),
        format!("{CALL_PREFIX}{module}@{server_id}/+"),
    ]
}

/// Module and method of a request topic, when it is one.
pub fn parse_call_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix(CALL_PREFIX)?;
    let (target, method) = rest.split_once('/')?;
    let module = target.split_once('@').map_or(target, |(m, _)| m);
    (!module.is_empty() && !method.is_empty() && !method.contains('/')).then_some((module, method))
}

/// The presence topic of server `server_id`.
pub fn presence_topic(server_id: &str) -> String {
    format!("{PRESENCE_PREFIX}{server_id}")
}

/// The presence payload of a process announcing `a`.
pub fn encode_presence(a: &Announced) -> Vec<u8> {
    let v = if a.idempotent.is_empty() {
        serde_json::json!({ "modules": a.modules })
    } else {
        serde_json::json!({ "modules": a.modules, "idempotent": a.idempotent })
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Longest server id or module name taken from a presence message.
pub const MAX_PRESENCE_NAME: usize = 128;
/// Most modules one presence message may name.
pub const MAX_PRESENCE_MODULES: usize = 256;
/// Most idempotent handlers one presence message may name.
pub const MAX_PRESENCE_IDEMPOTENT: usize = 1024;

/// Why other processes would refuse the presence of `server_id` announcing `a` (a name empty
/// or over [`MAX_PRESENCE_NAME`] bytes, over [`MAX_PRESENCE_MODULES`] modules or
/// [`MAX_PRESENCE_IDEMPOTENT`] idempotent handlers, a handler not `Module/method` of a module
/// it names), if they would.
pub fn presence_refused(server_id: &str, a: &Announced) -> Option<String> {
    if server_id.is_empty() || server_id.len() > MAX_PRESENCE_NAME {
        return Some(format!(
            "server id `{server_id}` is not 1 to {MAX_PRESENCE_NAME} bytes"
        ));
    }
    if a.modules.len() > MAX_PRESENCE_MODULES {
        return Some(format!(
            "{} modules are over {MAX_PRESENCE_MODULES}",
            a.modules.len()
        ));
    }
    if a.idempotent.len() > MAX_PRESENCE_IDEMPOTENT {
        return Some(format!(
            "{} idempotent handlers are over {MAX_PRESENCE_IDEMPOTENT}",
            a.idempotent.len()
        ));
    }
    if let Some(n) = a
        .modules
        .iter()
        .find(|n| n.is_empty() || n.len() > MAX_PRESENCE_NAME)
    {
        return Some(format!(
            "module name `{n}` is not 1 to {MAX_PRESENCE_NAME} bytes"
        ));
    }
    a.idempotent
        .iter()
        .find(|h| {
            h.split_once('/').is_none_or(|(m, method)| {
                method.is_empty()
                    || method.len() > MAX_PRESENCE_NAME
                    || !a.modules.iter().any(|n| n == m)
            })
        })
        .map(|h| format!("idempotent handler `{h}` is not `Module/method` of a module announced"))
}

/// What a message on `topic` says about presence: `None` when it is not a presence topic;
/// `Some(Err(()))` when it is but is malformed or over the limits above; otherwise the server
/// id and what it announces, `None` for an empty payload (the process is gone), which is not
/// the same as a process announcing no modules (it is stopping, or runs none).
#[allow(clippy::type_complexity)]
pub fn decode_presence<'a>(
    topic: &'a str,
    payload: &[u8],
) -> Option<Result<(&'a str, Option<Announced>), ()>> {
    let server_id = topic.strip_prefix(PRESENCE_PREFIX)?;
    if presence_refused(server_id, &Announced::default()).is_some() {
        return Some(Err(()));
    }
    if payload.is_empty() {
        return Some(Ok((server_id, None)));
    }
    #[derive(Deserialize)]
    struct Presence {
        modules: Vec<String>,
        #[serde(default)]
        idempotent: Vec<String>,
    }
    // Room for every name quoted and separated by `", "` (Python's default), and the keys.
    let max = MAX_PRESENCE_MODULES * (MAX_PRESENCE_NAME + 4)
        + MAX_PRESENCE_IDEMPOTENT * (2 * MAX_PRESENCE_NAME + 5)
        + 64;
    let announced = (payload.len() <= max)
        .then(|| serde_json::from_slice::<Presence>(payload).ok())
        .flatten()
        .map(|p| Announced {
            modules: p.modules,
            idempotent: p.idempotent,
        })
        .filter(|a| presence_refused(server_id, a).is_none());
    Some(announced.map(|a| (server_id, Some(a))).ok_or(()))
}

/// The request payload: the session (with `traceparent`, formatted once by the caller) and
/// the already-encoded arguments.
pub fn encode_request(
    session: &Session,
    traceparent: Option<&str>,
    args: &[u8],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(args.len() + 160);
    out.extend_from_slice(b"{\"session\":");
    session
        .serialize_with(traceparent, &mut serde_json::Serializer::new(&mut out))
        .map_err(|e| e.to_string())?;
    out.extend_from_slice(b",\"args\":");
    out.extend_from_slice(if args.is_empty() { b"[]" } else { args });
    out.push(b'}');
    Ok(out)
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow)]
    session: SessionIn<'a>,
    #[serde(borrow)]
    args: &'a RawValue,
}

/// Reads a request payload into the session and the arguments.
#[cfg(any(test, feature = "internals"))]
pub fn decode_request(payload: &[u8]) -> Result<(Session, Vec<u8>), String> {
    decode_request_in(payload, None, None)
}

/// As [`decode_request`], with the trace context of the message's `traceparent` and
/// `tracestate` properties when they are given (they win over the session's own).
pub fn decode_request_in(
    payload: &[u8],
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Result<(Session, Vec<u8>), String> {
    let r: RequestIn<'_> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let session = r.session.into_session(traceparent, tracestate);
    Ok((session, r.args.get().as_bytes().to_vec()))
}

/// The properties of a request: reply address, deadline and trace context.
pub fn request_properties(
    reply_to: Option<(&str, u64)>,
    deadline: Deadline,
    session: &Session,
    traceparent: Option<String>,
) -> PublishProperties {
    let left = deadline.left();
    let mut user = Vec::with_capacity(3);
    if let Some(tp) = traceparent {
        user.push(("traceparent".to_string(), tp));
        if let Some(ts) = session.tracestate().filter(|s| !s.is_empty()) {
            user.push(("tracestate".to_string(), ts));
        }
    }
    user.push((TIMEOUT_PROPERTY.to_string(), left.as_millis().to_string()));
    PublishProperties {
        response_topic: reply_to.map(|(t, _)| t.to_string()),
        correlation_data: reply_to.map(|(_, id)| id.to_be_bytes().to_vec().into()),
        message_expiry_interval: Some(u32::try_from(left.as_secs() + 1).unwrap_or(u32::MAX)),
        user_properties: user,
        ..Default::default()
    }
}

/// The deadline a request carries: now plus its `mqrs-timeout-ms`; without a readable one,
/// plus its message expiry interval (which a broker lowers, in whole seconds, by the time the
/// message waited there); else plus `default`. Never more than an hour away.
pub fn request_deadline(props: Option<&PublishProperties>, default: Duration) -> Deadline {
    let given = props.and_then(|p| {
        p.user_properties
            .iter()
            .find(|(k, _)| k == TIMEOUT_PROPERTY)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    });
    let left = given
        .or_else(|| {
            props
                .and_then(|p| p.message_expiry_interval)
                .map(|s| Duration::from_secs(u64::from(s)))
        })
        .unwrap_or(default);
    Deadline::after(left)
}

/// A reply payload.
pub fn encode_reply(result: &Result<Vec<u8>, RpcError>) -> Vec<u8> {
    match result {
        Ok(v) => {
            let mut out = Vec::with_capacity(v.len() + 7);
            out.extend_from_slice(b"{\"ok\":");
            out.extend_from_slice(if v.is_empty() { b"null" } else { v });
            out.push(b'}');
            out
        }
        Err(e) => serde_json::to_vec(&serde_json::json!({ "err": e }))
            .unwrap_or_else(|_| br#"{"err":{"kind":"unavailable","detail":"?"}}"#.to_vec()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReplyIn<'a> {
    #[serde(borrow)]
    Ok(&'a RawValue),
    #[serde(borrow)]
    Err(&'a RawValue),
}

/// An error whose kind mqrs does not know, or whose detail has another shape.
#[derive(Deserialize)]
struct ForeignError {
    kind: String,
    #[serde(default)]
    detail: serde_json::Value,
}

/// Reads a reply payload; a malformed one becomes a `bad_reply` error naming `method`. An
/// error of a kind mqrs does not know (from a service in another language) becomes a
/// `handler_error` that keeps its kind and detail in its text.
pub fn decode_reply(payload: &[u8], method: &str) -> Result<Vec<u8>, RpcError> {
    let malformed = |e: serde_json::Error| RpcError::BadReply {
        method: method.to_string(),
        reason: format!("malformed reply from another process: {e}"),
    };
    match serde_json::from_slice::<ReplyIn<'_>>(payload) {
        Ok(ReplyIn::Ok(v)) => Ok(v.get().as_bytes().to_vec()),
        Ok(ReplyIn::Err(raw)) => Err(match serde_json::from_str::<RpcError>(raw.get()) {
            Ok(e) => e,
            Err(e) => match serde_json::from_str::<ForeignError>(raw.get()) {
                Ok(f) => RpcError::Handler(match f.detail {
                    serde_json::Value::Null => f.kind,
                    serde_json::Value::String(d) => format!("{}: {d}", f.kind),
                    d => format!("{}: {d}", f.kind),
                }),
                Err(_) => malformed(e),
            },
        }),
        Err(e) => Err(malformed(e)),
    }
}

/// Longest response topic a request may name (mqrs's own are about 40 bytes).
pub const MAX_REPLY_TOPIC: usize = 256;
/// Most bytes of correlation data a request may carry (mqrs's own carry 8): each reply echoes
/// them, so a caller must not be able to make replies too large to send.
pub const MAX_CORRELATION: usize = 64;

/// True for a response topic a reply may go to: under [`REPLY_PREFIX`] (so a broker's ACLs can
/// keep mqrs processes publishing under `mqrs/`), at most [`MAX_REPLY_TOPIC`] bytes, no
/// wildcard.
pub fn valid_reply_topic(t: &str) -> bool {
    t.len() <= MAX_REPLY_TOPIC
        && t.strip_prefix(REPLY_PREFIX)
            .is_some_and(|rest| !rest.is_empty())
        && !t.contains(['+', '#', '\0'])
}

/// User property of a reply saying that the callee keeps its part of a trace the sampler
/// skipped (`error` or `slow`), so the caller keeps its part too.
pub const KEPT_PROPERTY: &str = "mqrs-kept";

/// A reply's properties: the call's correlation data, and [`KEPT_PROPERTY`] when it applies.
pub fn reply_properties(
    correlation: Option<bytes::Bytes>,
    kept: Option<KeepReason>,
) -> PublishProperties {
    PublishProperties {
        correlation_data: correlation,
        user_properties: kept
            .map(|k| vec![(KEPT_PROPERTY.to_string(), k.as_str().to_string())])
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The [`KEPT_PROPERTY`] of a reply, if present and known.
pub fn reply_kept(props: Option<&PublishProperties>) -> Option<KeepReason> {
    props?
        .user_properties
        .iter()
        .find(|(k, _)| k == KEPT_PROPERTY)
        .and_then(|(_, v)| KeepReason::parse(v))
}

/// The call id in a reply's correlation data.
pub fn correlation_id(props: Option<&PublishProperties>) -> Option<u64> {
    let data = props?.correlation_data.as_ref()?;
    Some(u64::from_be_bytes(data.as_ref().try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionData;

    #[test]
    fn topics() {
        assert_eq!(
            call_topic(Target::module("Login"), "track"),
            "mqrs/call/Login/track"
        );
        assert_eq!(
            call_topic(Target::on_server("Gate", "g1"), "Bind"),
            "mqrs/call/Gate@g1/Bind"
        );
        assert_eq!(
            parse_call_topic("mqrs/call/Gate@g1/Bind"),
            Some(("Gate", "Bind"))
        );
        assert_eq!(
            parse_call_topic("mqrs/call/Login/track"),
            Some(("Login", "track"))
        );
        for bad in [
            "mqrs/call/Login",
            "mqrs/call//x",
            "mqrs/call/L/",
            "other/L/x",
            "mqrs/call/L/a/b",
        ] {
            assert_eq!(parse_call_topic(bad), None, "{bad}");
        }
        let [shared, pinned] = call_subscriptions("Chat", "s1");
        assert_eq!(shared, "$share/Chat/mqrs/call/Chat/+");
        assert_eq!(pinned, "mqrs/call/Chat@s1/+");
    }

    #[test]
    fn reply_topics() {
        assert!(valid_reply_topic("mqrs/reply/s1/0123456789abcdef"));
        assert!(valid_reply_topic("mqrs/reply/python-service/only"));
        let long = format!("mqrs/reply/{}", "x".repeat(MAX_REPLY_TOPIC));
        for bad in [
            "",
            "mqrs/reply/",
            "mqrs/call/Login/track",
            "elsewhere/reply",
            "$SYS/x",
            "mqrs/reply/+",
            "mqrs/reply/#",
            "mqrs/reply/a\0b",
            &long,
        ] {
            assert!(!valid_reply_topic(bad), "{bad}");
        }
    }

    fn modules(m: &[&str]) -> Announced {
        Announced {
            modules: m.iter().map(|s| s.to_string()).collect(),
            idempotent: Vec::new(),
        }
    }

    #[test]
    fn presence() {
        let a = Announced {
            modules: vec!["Login".into(), "Chat".into()],
            idempotent: vec!["Login/track".into()],
        };
        let p = encode_presence(&a);
        assert_eq!(
            decode_presence("mqrs/presence/s1", &p),
            Some(Ok(("s1", Some(a.clone()))))
        );
        // Without the idempotent list (an older process, or another language's).
        assert_eq!(
            decode_presence("mqrs/presence/s1", br#"{"modules": ["Login"]}"#),
            Some(Ok(("s1", Some(modules(&["Login"])))))
        );
        // Gone (empty payload) is not the same as present with no modules.
        assert_eq!(
            decode_presence("mqrs/presence/s1", b""),
            Some(Ok(("s1", None)))
        );
        assert_eq!(
            decode_presence("mqrs/presence/s1", &encode_presence(&modules(&[]))),
            Some(Ok(("s1", Some(modules(&[])))))
        );
        assert_eq!(decode_presence("other/s1", &p), None);
        // Malformed, or over the limits: refused, never taken in part.
        let long = "x".repeat(MAX_PRESENCE_NAME + 1);
        let many: Vec<String> = (0..=MAX_PRESENCE_MODULES)
            .map(|i| format!("M{i}"))
            .collect();
        let idem = |h: &[&str]| Announced {
            modules: vec!["Login".into()],
            idempotent: h.iter().map(|s| s.to_string()).collect(),
        };
        let too_many: Vec<String> = (0..=MAX_PRESENCE_IDEMPOTENT)
            .map(|i| format!("Login/m{i}"))
            .collect();
        for (topic, payload) in [
            ("mqrs/presence/s1", b"junk".to_vec()),
            ("mqrs/presence/", p.clone()),
            (&*format!("mqrs/presence/{long}"), p.clone()),
            ("mqrs/presence/s1", encode_presence(&modules(&[&long]))),
            ("mqrs/presence/s1", encode_presence(&modules(&[""]))),
            (
                "mqrs/presence/s1",
                encode_presence(&Announced {
                    modules: many.clone(),
                    idempotent: Vec::new(),
                }),
            ),
            ("mqrs/presence/s1", encode_presence(&idem(&["track"]))),
            ("mqrs/presence/s1", encode_presence(&idem(&["Chat/x"]))),
            ("mqrs/presence/s1", encode_presence(&idem(&["Login/"]))),
            (
                "mqrs/presence/s1",
                encode_presence(&Announced {
                    modules: vec!["Login".into()],
                    idempotent: too_many.clone(),
                }),
            ),
            ("mqrs/presence/s1", vec![b' '; 1 << 20]),
        ] {
            assert_eq!(decode_presence(topic, &payload), Some(Err(())), "{topic}");
        }
    }

    #[test]
    fn request_and_reply_round_trip() {
        let s = Session::new(SessionData {
            userid: "ann".into(),
            ..Default::default()
        });
        let p = encode_request(&s, None, br#"[1,{"a":"b"}]"#).expect("encodes");
        let (back, args) = decode_request(&p).expect("decodes");
        assert_eq!(back.userid(), "ann");
        assert_eq!(args, br#"[1,{"a":"b"}]"#);
        assert!(decode_request(b"{\"session\":{}}").is_err());
        assert!(decode_request(b"\xff").is_err());

        let ok = encode_reply(&Ok(br#"{"x":1}"#.to_vec()));
        assert_eq!(decode_reply(&ok, "M/f"), Ok(br#"{"x":1}"#.to_vec()));
        let e = RpcError::DeadlineExceeded("M/f".into());
        assert_eq!(decode_reply(&encode_reply(&Err(e.clone())), "M/f"), Err(e));
        let bad = decode_reply(b"{\"maybe\":1}", "M/f").expect_err("malformed");
        assert_eq!(bad.kind(), "bad_reply");
        // A foreign service's own error kinds and detail shapes are kept, as handler errors.
        for (payload, text) in [
            (
                r#"{"err":{"kind":"quota","detail":"3 calls a second"}}"#,
                "quota: 3 calls a second",
            ),
            (
                r#"{"err":{"kind":"timeout","detail":"late"}}"#,
                "timeout: late",
            ),
            (
                r#"{"err":{"kind":"busy","detail":{"retry_ms":50}}}"#,
                r#"busy: {"retry_ms":50}"#,
            ),
            (r#"{"err":{"kind":"gone"}}"#, "gone"),
        ] {
            assert_eq!(
                decode_reply(payload.as_bytes(), "M/f"),
                Err(RpcError::Handler(text.into())),
                "{payload}"
            );
        }
        let bad = decode_reply(br#"{"err":{"detail":"no kind"}}"#, "M/f").expect_err("malformed");
        assert_eq!(bad.kind(), "bad_reply");
    }

    #[test]
    fn deadline_and_correlation_properties() {
        let s = Session::default();
        let deadline = Deadline::after(Duration::from_millis(2500));
        let props = request_properties(Some(("mqrs/reply/x", 7)), deadline, &s, None);
        assert_eq!(props.response_topic.as_deref(), Some("mqrs/reply/x"));
        assert_eq!(correlation_id(Some(&props)), Some(7));
        assert_eq!(props.message_expiry_interval, Some(3));
        let back = request_deadline(Some(&props), Duration::from_secs(60));
        let left = back.left();
        assert!(left <= Duration::from_millis(2500) && left > Duration::from_millis(2000));
        let none = request_properties(None, deadline, &s, None);
        assert!(none.response_topic.is_none() && none.correlation_data.is_none());
        // What a foreign caller may send: the expiry alone, a huge or unreadable time left.
        let left = |timeout: Option<&str>, expiry: Option<u32>| {
            let props = PublishProperties {
                message_expiry_interval: expiry,
                user_properties: timeout
                    .map(|t| vec![(TIMEOUT_PROPERTY.to_string(), t.to_string())])
                    .unwrap_or_default(),
                ..Default::default()
            };
            let d = request_deadline(Some(&props), Duration::from_secs(60));
            d.left().as_secs_f64()
        };
        let near = |x: f64, want: f64| (x - want).abs() < 0.5;
        assert!(near(left(None, Some(5)), 5.0));
        assert!(near(left(Some("2000"), Some(5)), 2.0));
        // A broker counts expiry in whole seconds: the caller's own time left wins.
        assert!(near(left(Some("1999"), Some(1)), 2.0));
        assert!(near(left(Some("abc"), None), 60.0));
        assert!(near(left(Some("-5"), Some(7)), 7.0));
        assert!(near(left(Some("18446744073709551615"), None), 3600.0));
        assert!(near(left(None, Some(u32::MAX)), 3600.0));
        assert!(near(left(Some("0"), None), 0.0));
    }

    #[test]
    fn the_traceparent_property_wins_over_the_sessions_own() {
        let in_json = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let in_property = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let payload = format!(r#"{{"session":{{"traceparent":"{in_json}"}},"args":[]}}"#);
        let (s, _) = decode_request(payload.as_bytes()).expect("decodes");
        assert_eq!(s.traceparent().as_deref(), Some(in_json));
        let (s, _) =
            decode_request_in(payload.as_bytes(), Some(in_property), Some("k=v")).expect("decodes");
        assert_eq!(s.traceparent().as_deref(), Some(in_property));
        assert_eq!(s.tracestate().as_deref(), Some("k=v"));
        // A property that is not a traceparent leaves the session's own.
        let (s, _) = decode_request_in(payload.as_bytes(), Some("junk"), None).expect("decodes");
        assert_eq!(s.traceparent().as_deref(), Some(in_json));
    }
}
