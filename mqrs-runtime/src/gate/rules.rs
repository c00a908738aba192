//! MQTT 3.1.1 rules the packet decoder does not enforce, checked on each complete frame before
//! it is decoded (and on a PUBLISH's topic after): a client that breaks one is disconnected, as
//! the specification requires, and counted.

/// Why a frame breaks the protocol.
pub(crate) type Violation = &'static str;

/// Checks a complete frame: the fixed header's type and flags, a CONNECT's flags, and a
/// SUBSCRIBE's requested options.
pub(crate) fn check_frame(frame: &[u8]) -> Result<(), Violation> {
    let Some(&first) = frame.first() else {
        return Err("empty frame");
    };
    let (kind, flags) = (first >> 4, first & 0x0f);
    let body = body(frame).ok_or("fixed header without a length")?;
    match kind {
        // PUBLISH: any flags but QoS 3 (the decoder refuses that itself).
        3 => Ok(()),
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE: flags must be 0010 (§2.2.2).
        6 | 8 | 10 if flags != 0b0010 => Err("reserved fixed-header flags must be 0010"),
        8 => check_subscribe(body),
        6 | 10 => Ok(()),
        1 | 4 | 5 | 7 | 12 | 14 if flags != 0 => Err("reserved fixed-header flags must be 0"),
        1 => check_connect(body),
        4 | 5 | 7 | 12 | 14 => Ok(()),
        // CONNACK, SUBACK, UNSUBACK, PINGRESP go to clients, never from them; 0 and 15 are
        // reserved.
        _ => Err("a packet type a client may not send"),
    }
}

/// A PUBLISH topic name: not empty, no wildcard, no NUL (§4.7.3, §1.5.3).
pub(crate) fn check_topic(topic: &str) -> Result<(), Violation> {
    if topic.is_empty() {
        Err("PUBLISH with an empty topic")
    } else if topic.contains(['+', '#']) {
        Err("PUBLISH topic with a wildcard")
    } else if topic.contains('\0') {
        Err("PUBLISH topic with a NUL character")
    } else {
        Ok(())
    }
}

/// The frame after its fixed header (type byte and 1 to 4 bytes of remaining length).
fn body(frame: &[u8]) -> Option<&[u8]> {
    let mut i = 1;
    while *frame.get(i)? & 0x80 != 0 {
        i += 1;
        if i > 4 {
            return None;
        }
    }
    frame.get(i + 1..)
}

/// CONNECT flags (§3.1.2.3–3.1.2.9): reserved bit clear, a password only with a user name, no
/// will QoS 3, and will QoS and retain only with a will.
fn check_connect(body: &[u8]) -> Result<(), Violation> {
    // Protocol name (2-byte length + bytes), then the level byte, then the flags.
    let Some(name_len) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Err("CONNECT too short");
    };
    let Some(&flags) = body.get(2 + name_len + 1) else {
        return Err("CONNECT too short");
    };
    let will = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    if flags & 1 != 0 {
        Err("CONNECT with the reserved flag set")
    } else if flags & 0b0100_0000 != 0 && flags & 0b1000_0000 == 0 {
        Err("CONNECT with a password but no user name")
    } else if will_qos == 3 {
        Err("CONNECT with will QoS 3")
    } else if !will && (will_qos != 0 || will_retain) {
        Err("CONNECT with will QoS or retain but no will")
    } else {
        Ok(())
    }
}

/// SUBSCRIBE payload (§3.8.3): each filter's options byte has its upper six bits clear and a
/// QoS of at most 2; there is at least one filter.
fn check_subscribe(body: &[u8]) -> Result<(), Violation> {
    // Packet identifier, then (length, filter, options) repeated.
    let mut rest = body.get(2..).ok_or("SUBSCRIBE too short")?;
    if rest.is_empty() {
        return Err("SUBSCRIBE without a topic filter");
    }
    while !rest.is_empty() {
        let len = rest
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or("SUBSCRIBE filter cut short")?;
        let options = *rest.get(2 + len).ok_or("SUBSCRIBE filter cut short")?;
        if options & 0b1111_1100 != 0 {
            return Err("SUBSCRIBE options with reserved bits set");
        }
        if options & 0b11 == 3 {
            return Err("SUBSCRIBE with QoS 3");
        }
        rest = &rest[2 + len + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT frame for "MQTT" level 4 with `flags` and nothing after them that matters.
    fn connect(flags: u8) -> Vec<u8> {
        vec![0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60]
    }

    #[test]
    fn frames() {
        assert_eq!(check_frame(&connect(0b0000_0010)), Ok(()));
        assert!(check_frame(&connect(0b0000_0011)).is_err(), "reserved bit");
        assert!(
            check_frame(&connect(0b0100_0010)).is_err(),
            "password alone"
        );
        assert_eq!(check_frame(&connect(0b1100_0010)), Ok(()));
        assert!(check_frame(&connect(0b0001_1110)).is_err(), "will QoS 3");
        assert!(
            check_frame(&connect(0b0010_0010)).is_err(),
            "retain without will"
        );
        // SUBSCRIBE id 1, filter "a", options.
        let sub = |first: u8, opts: u8| vec![first, 6, 0, 1, 0, 1, b'a', opts];
        assert_eq!(check_frame(&sub(0x82, 1)), Ok(()));
        assert!(check_frame(&sub(0x80, 1)).is_err(), "flags 0000");
        assert!(check_frame(&sub(0x82, 3)).is_err(), "QoS 3");
        assert!(
            check_frame(&sub(0x82, 0x41)).is_err(),
            "reserved option bits"
        );
        assert!(check_frame(&[0x82, 2, 0, 1]).is_err(), "no filter");
        assert!(
            check_frame(&[0x82, 5, 0, 1, 0, 9, b'a']).is_err(),
            "cut short"
        );
        assert_eq!(check_frame(&[0xc0, 0]), Ok(()), "PINGREQ");
        assert!(check_frame(&[0xc1, 0]).is_err(), "PINGREQ flags");
        assert!(
            check_frame(&[0x20, 2, 0, 0]).is_err(),
            "CONNACK from a client"
        );
        assert!(check_frame(&[0xf0, 0]).is_err(), "reserved type");
        assert!(check_frame(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    #[test]
    fn topics() {
        assert_eq!(check_topic("Chat/HD_JoinChat/1"), Ok(()));
        for bad in ["", "Chat/#/1", "+/HD_JoinChat/1", "a\0b"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }
}
