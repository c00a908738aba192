//! The client wire rules of mqant: the topic `Module[@ServerId]/HD_Handler[/msgid]`, the body
//! (`{` starts JSON, anything else is bytes) and the reply `{"Result","Error","TraceId"}`.

use serde_json::Value;

use crate::error::RpcError;

/// A parsed client topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTopic<'a> {
    /// The call target as written, `Module` or `Module@ServerId`: passed on as it is, the
    /// router sends it to that server, here or behind the broker.
    pub target: &'a str,
    /// Target module.
    pub module: &'a str,
    /// Optional target server id (`Module@ServerId`).
    pub server_id: Option<&'a str>,
    /// Handler name.
    pub handler: &'a str,
    /// Message id; present means a reply is wanted.
    pub msgid: Option<&'a str>,
}

/// Splits a client topic; the error says what shape was expected.
pub fn parse_topic(topic: &str) -> Result<ClientTopic<'_>, String> {
    let parts: Vec<&str> = topic.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "topic `{topic}` must be Module/HD_Handler or Module/HD_Handler/msgid"
        ));
    }
    let (module, server_id) = match parts[0].split_once('@') {
        Some((m, s)) if !m.is_empty() && !s.is_empty() => (m, Some(s)),
        Some(_) => return Err(format!("topic `{topic}`: expected Module@ServerId")),
        None => (parts[0], None),
    };
    Ok(ClientTopic {
        target: parts[0],
        module,
        server_id,
        handler: parts[1],
        msgid: parts.get(2).copied(),
    })
}

/// True when a publish on `topic` expects a reply (it has a third level).
pub fn wants_reply(topic: &str) -> bool {
    topic.split('/').count() >= 3
}

/// Turns a client body into handler arguments: one argument, the JSON map or the raw bytes.
pub fn body_to_args(method: &str, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let arg = if body.first() == Some(&b'{') {
        serde_json::from_slice::<Value>(body).map_err(|e| RpcError::BadArgs {
            method: method.to_string(),
            reason: format!("body starts with '{{' but is not valid JSON: {e}"),
        })?
    } else if body.is_empty() {
        return Ok(b"[]".to_vec());
    } else {
        match std::str::from_utf8(body) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::Array(body.iter().map(|b| Value::from(*b)).collect()),
        }
    };
    Ok(serde_json::to_vec(&[arg]).unwrap_or_else(|_| b"[]".to_vec()))
}

/// Encodes the reply a client receives on its request topic.
pub fn encode_reply(result: Result<Vec<u8>, RpcError>, trace_id: Option<&str>) -> Vec<u8> {
    let (result, error) = match result {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => (v, String::new()),
            Err(e) => (Value::Null, format!("handler reply is not JSON: {e}")),
        },
        Err(e) => (Value::Null, e.to_string()),
    };
    let mut reply = serde_json::Map::with_capacity(3);
    reply.insert("Result".into(), result);
    reply.insert("Error".into(), Value::String(error));
    if let Some(id) = trace_id {
        reply.insert("TraceId".into(), Value::String(id.to_string()));
    }
    serde_json::to_vec(&Value::Object(reply)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let t = parse_topic("Chat@s1/HD_JoinChat/2").expect("ok");
        assert_eq!(
            (t.module, t.server_id, t.handler, t.msgid),
            ("Chat", Some("s1"), "HD_JoinChat", Some("2"))
        );
        assert_eq!(parse_topic("Chat/HD_JoinChat").expect("ok").msgid, None);
        for bad in [
            "Chat",
            "",
            "/HD_X/1",
            "Chat//1",
            "a/b/c/d",
            "@s/HD_X",
            "Chat@/HD_X",
        ] {
            assert!(parse_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(
            body_to_args("m", br#"{"a":1}"#).expect("ok"),
            br#"[{"a":1}]"#
        );
        assert_eq!(body_to_args("m", b"hi").expect("ok"), br#"["hi"]"#);
        assert_eq!(body_to_args("m", &[0xff, 1]).expect("ok"), b"[[255,1]]");
        assert_eq!(body_to_args("m", b"").expect("ok"), b"[]");
        let e = body_to_args("m", b"{oops").expect_err("bad json");
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn replies() {
        let ok: Value =
            serde_json::from_slice(&encode_reply(Ok(b"[1]".to_vec()), Some("ab"))).expect("json");
        assert_eq!(
            ok,
            serde_json::json!({"Result":[1],"Error":"","TraceId":"ab"})
        );
        let err: Value = serde_json::from_slice(&encode_reply(
            Err(RpcError::UnknownModule("X".into())),
            None,
        ))
        .expect("json");
        assert_eq!(
            err,
            serde_json::json!({"Result":null,"Error":"unknown module `X`"})
        );
    }
}
