//! Bounded property runs (proptest; `cargo fuzz` needs a nightly toolchain this project does
//! not assume) over everything that decodes bytes from outside on the RPC path: client topics
//! and bodies at the gate, handler arguments, and requests and replies from other processes.
//! None may panic, whatever the bytes; and what mqrs encodes, it decodes back.

use mqrs_runtime::internals::{
    body_to_args, decode_args, decode_no_args, decode_reply, decode_request, encode_reply,
    encode_request, parse_topic,
};
use mqrs_runtime::{Session, SessionData};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that are often almost JSON: arbitrary, or JSON-looking fragments glued together.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"\"session\":".to_vec()),
        Just(b"\"args\":".to_vec()),
        Just(b"\"ok\":".to_vec()),
        Just(b"\"err\":".to_vec()),
        Just(b"null".to_vec()),
        Just(b",".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(fragment, 0..24).prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gate_input_never_panics(topic in "\\PC{0,64}", body in bytes()) {
        let _ = parse_topic(&topic);
        if let Ok(args) = body_to_args("M/HD_x", &body) {
            // What the gate passes on is a JSON array: the body as one argument, none for none.
            let v: serde_json::Value = serde_json::from_slice(&args).expect("JSON");
            prop_assert_eq!(v.as_array().map(Vec::len), Some(usize::from(!body.is_empty())));
        }
    }

    #[test]
    fn handler_arguments_never_panic(args in bytes()) {
        let _ = decode_no_args("M/f", &args);
        let _ = decode_args::<(String, u64)>("M/f", &args);
        let _ = decode_args::<(Vec<serde_json::Value>,)>("M/f", &args);
    }

    #[test]
    fn messages_from_other_processes_never_panic(payload in bytes()) {
        let _ = decode_request(&payload);
        let _ = decode_reply(&payload, "M/f");
    }

    #[test]
    fn requests_and_replies_round_trip(user in "\\PC{0,32}", n in any::<i64>(), text in "\\PC{0,64}") {
        let session = Session::new(SessionData { userid: user.clone(), ..Default::default() });
        let args = serde_json::to_vec(&(n, &text)).expect("args");
        let wire = encode_request(&session, None, &args).expect("encodes");
        let (back, got) = decode_request(&wire).expect("decodes");
        prop_assert_eq!(back.userid(), user.as_str());
        prop_assert_eq!(serde_json::from_slice::<(i64, String)>(&got).expect("args"), (n, text.clone()));
        let reply = encode_reply(&Ok(serde_json::to_vec(&text).expect("json")));
        let got = decode_reply(&reply, "M/f").expect("reply");
        prop_assert_eq!(serde_json::from_slice::<String>(&got).expect("text"), text);
    }
}
