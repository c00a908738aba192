//! W3C trace context: the `traceparent` text form, written only at a process boundary.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Formats `00-<trace id>-<span id>-<flags>`; `None` for an invalid (all-zero) context.
pub fn format_traceparent(sc: &SpanContext) -> Option<String> {
    if !sc.is_valid() {
        return None;
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, &sc.trace_id().to_bytes());
    out.push('-');
    push_hex(&mut out, &sc.span_id().to_bytes());
    out.push('-');
    push_hex(&mut out, &[sc.trace_flags().to_u8()]);
    Some(out)
}

/// A trace id as 32 lower-case hex digits (as `Display` writes it, without its formatting
/// machinery: this runs for every reply that names its trace).
pub fn trace_id_hex(id: opentelemetry::trace::TraceId) -> String {
    let mut out = String::with_capacity(32);
    push_hex(&mut out, &id.to_bytes());
    out
}

/// Appends `bytes` as lower-case hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Parses a version-00 `traceparent`; rejects wrong lengths, non-hex, upper case and all-zero ids.
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    // The common, exact form first; surrounding blanks and later versions take the long way.
    parse_version_00(s.as_bytes()).or_else(|| {
        let s = s.trim();
        parse_version_00(s.as_bytes()).or_else(|| parse_any_version(s))
    })
}

/// [`parse_traceparent`] field by field, for every version.
fn parse_any_version(s: &str) -> Option<SpanContext> {
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four fields; later versions may append more.
    if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & 0x01),
        true,
        TraceState::default(),
    ))
}

/// The common case read in one pass: exactly `00-<32 hex>-<16 hex>-<2 hex>`, lower case.
/// Anything else (other versions, bad text) is left to the general reading, which rejects it
/// or reads a later version's first four fields.
fn parse_version_00(b: &[u8]) -> Option<SpanContext> {
    if b.len() != 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let mut trace = [0u8; 16];
    hex_into(&b[3..35], &mut trace)?;
    let mut span = [0u8; 8];
    hex_into(&b[36..52], &mut span)?;
    let mut flags = [0u8; 1];
    hex_into(&b[53..55], &mut flags)?;
    let (trace_id, span_id) = (TraceId::from_bytes(trace), SpanId::from_bytes(span));
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags[0] & 0x01),
        true,
        TraceState::default(),
    ))
}

/// The value of each lower-case hex digit by byte; `0xff` for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes lower-case hex `text` into `out` (twice as long as `out`); `None` on any other byte.
/// Looked up without a branch per digit: digits and letters come in random order in ids, so
/// a branch on them is mispredicted about every third digit.
fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | lo;
    }
    (bad & 0xf0 == 0).then_some(())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).expect("valid");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        assert_eq!(format_traceparent(&sc).as_deref(), Some(tp));
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let sc = parse_traceparent(unsampled).expect("valid");
        assert_eq!(format_traceparent(&sc).as_deref(), Some(unsampled));
        assert_eq!(format_traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn the_one_pass_reading_agrees_with_the_field_by_field_one() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse_version_00(valid.as_bytes()).is_some());
        // Every one-byte change of a valid value: read alike, or left to the general reading.
        for i in 0..valid.len() {
            for c in [b'0', b'9', b'a', b'f', b'g', b'A', b'F', b'-', b' ', 0xc3] {
                let mut bytes = valid.as_bytes().to_vec();
                bytes[i] = c;
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                if let Some(fast) = parse_version_00(text.as_bytes()) {
                    assert_eq!(Some(fast), parse_any_version(text), "{text}");
                }
                assert_eq!(
                    parse_traceparent(text),
                    parse_any_version(text.trim()),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn every_byte_is_read_as_a_hex_digit_or_refused() {
        for b in 0..=255u8 {
            let expected = match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            for pair in [[b'0', b], [b, b'0']] {
                let mut out = [0u8; 1];
                let got = hex_into(&pair, &mut out).map(|()| out[0]);
                let want = expected.map(|v| if pair[0] == b'0' { v } else { v << 4 });
                assert_eq!(got, want, "{pair:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "accepted {bad:?}");
        }
    }

    /// Our text form must agree with the OpenTelemetry SDK's own W3C propagator both ways.
    #[test]
    fn agrees_with_the_sdk_propagator() {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::TraceContextExt;
        use opentelemetry::Context;
        use opentelemetry_sdk::propagation::TraceContextPropagator;
        use std::collections::HashMap;

        let prop = TraceContextPropagator::new();
        for tp in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ] {
            let ours = parse_traceparent(tp).expect("ours parses");
            let mut carrier = HashMap::new();
            prop.inject_context(
                &Context::new().with_remote_span_context(ours.clone()),
                &mut carrier,
            );
            assert_eq!(carrier.get("traceparent").map(String::as_str), Some(tp));
            let theirs = prop.extract(&carrier);
            let sc = theirs.span().span_context().clone();
            assert_eq!(format_traceparent(&sc).as_deref(), Some(tp));
            assert_eq!(sc, ours);
        }
    }

    #[test]
    fn unsampled_flag_is_kept() {
        let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .expect("valid");
        assert!(!sc.is_sampled());
    }
}
