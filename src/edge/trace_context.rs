//! W3C Trace Context (https://www.w3.org/TR/trace-context/): `traceparent` and `tracestate`.
//!
//! A well-formed incoming `traceparent` (version 00 exactly) is continued: its trace id is
//! kept, gatehouse is a new span in it (a new span id, sent upstream as the parent id) and
//! its flags are passed on. Anything else — a malformed value, another version, the header
//! twice — starts a new trace; the incoming value is never forwarded. `tracestate` goes on
//! as it came only beside a continued `traceparent`, and only when it is well-formed and at
//! most 512 characters long. Pure parsing here, no framework types.

/// The longest `tracestate` passed on (the size every vendor must be able to propagate).
pub const MAX_TRACESTATE_LEN: usize = 512;
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The trace a request belongs to, and gatehouse's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// gatehouse's span for this request: the parent id the upstream sees.
    pub span_id: String,
    /// Two lower-case hex digits.
    pub flags: String,
    /// The caller's `tracestate`, when it is passed on.
    pub tracestate: Option<String>,
    /// The caller's span (the parent id it sent), when the trace was continued.
    pub parent_id: Option<String>,
    /// Whether the trace came from the caller (false: started here).
    pub continued: bool,
}

impl TraceContext {
    /// From the request's `traceparent` and `tracestate` values (every occurrence of each
    /// header, raw bytes), or a new trace. `random` fills buffers with random bytes.
    pub fn from_headers<'a>(
        traceparent: impl IntoIterator<Item = &'a [u8]>,
        tracestate: impl IntoIterator<Item = &'a [u8]>,
        mut random: impl FnMut(&mut [u8]),
    ) -> Self {
        let mut span = [0u8; 8];
        fill_nonzero(&mut span, &mut random);
        let span_id = hex(&span);
        let mut parents = traceparent.into_iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(only), None) => parse_traceparent(only),
            _ => None,
        };
        match parent {
            Some(parent) => Self {
                trace_id: parent.trace_id.to_owned(),
                span_id,
                flags: parent.flags.to_owned(),
                tracestate: acceptable_tracestate(tracestate),
                parent_id: Some(parent.parent_id.to_owned()),
                continued: true,
            },
            None => {
                let mut trace = [0u8; 16];
                fill_nonzero(&mut trace, &mut random);
                Self {
                    trace_id: hex(&trace),
                    span_id,
                    // gatehouse's own log lines for the request carry the trace id: it has
                    // recorded something, and an upstream that samples by its parent keeps
                    // the trace.
                    flags: "01".to_owned(),
                    tracestate: None,
                    parent_id: None,
                    continued: false,
                }
            }
        }
    }

    /// The `traceparent` value for the upstream: this trace, gatehouse's span as the parent.
    pub fn traceparent(&self) -> String {
        self.traceparent_from(&self.span_id)
    }

    /// The `traceparent` value for a call made from another of gatehouse's spans in this
    /// trace (`span_id`, 16 lower-case hex digits): an exported client span.
    pub fn traceparent_from(&self, span_id: &str) -> String {
        let parts = [self.trace_id.as_str(), span_id, self.flags.as_str()];
        let mut value = String::with_capacity(3 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
        value.push_str("00");
        for part in parts {
            value.push('-');
            value.push_str(part);
        }
        value
    }
}

fn fill_nonzero(buf: &mut [u8], random: &mut impl FnMut(&mut [u8])) {
    loop {
        random(buf);
        if buf.iter().any(|b| *b != 0) {
            return;
        }
    }
}

/// Lower-case hex by table: `write!` per byte went through the formatting machinery 24
/// times per request.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The parts of a well-formed version-00 `traceparent`.
#[derive(Debug, PartialEq, Eq)]
pub struct TraceParent<'a> {
    pub trace_id: &'a str,
    pub parent_id: &'a str,
    pub flags: &'a str,
}

fn lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower-case hex only, ids not all zero, nothing more.
/// Other versions (and the invalid `ff`) are not continued.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent<'_>> {
    if value.len() != 55 || &value[..3] != b"00-" || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !(lower_hex(trace) && lower_hex(parent) && lower_hex(flags))
        || trace.iter().all(|b| *b == b'0')
        || parent.iter().all(|b| *b == b'0')
    {
        return None;
    }
    // All ASCII, checked above.
    let text = std::str::from_utf8(value).ok()?;
    Some(TraceParent {
        trace_id: &text[3..35],
        parent_id: &text[36..52],
        flags: &text[53..55],
    })
}

/// Every `tracestate` value joined (the header is a list: several lines are one list), when
/// the whole is well-formed and at most 512 characters; otherwise nothing.
pub fn acceptable_tracestate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut joined = String::new();
    for (i, value) in values.into_iter().enumerate() {
        let text = std::str::from_utf8(value).ok()?;
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(text);
        if joined.len() > MAX_TRACESTATE_LEN {
            return None;
        }
    }
    (!joined.is_empty() && valid_tracestate(&joined)).then_some(joined)
}

/// `list-member *( OWS "," OWS list-member )`, empty members allowed, at most 32 members,
/// no key twice.
fn valid_tracestate(list: &str) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    for member in list.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !valid_key(key) || !valid_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > MAX_TRACESTATE_MEMBERS {
            return false;
        }
    }
    !keys.is_empty()
}

fn key_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// `simple-key` (lcalpha, then up to 255 of lcalpha / digit / `_-*/`) or
/// `tenant-id@system-id` (a letter or digit and up to 240 more; a letter and up to 13 more).
fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match key.split_once('@') {
        None => {
            (1..=256).contains(&bytes.len())
                && bytes[0].is_ascii_lowercase()
                && bytes.iter().all(|b| key_char(*b))
        }
        Some((tenant, system)) => {
            let (tenant, system) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant.iter().all(|b| key_char(*b))
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && system.iter().all(|b| key_char(*b))
        }
    }
}

/// Up to 256 printable ASCII characters other than `,` and `=`, spaces allowed but not last.
fn valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=256).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| matches!(b, 0x20..=0x7e) && *b != b',' && *b != b'=')
        && bytes[bytes.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
    }

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                n = n.wrapping_add(1);
                *b = n;
            }
        }
    }

    fn context(parents: &[&str], states: &[&str]) -> TraceContext {
        TraceContext::from_headers(
            parents.iter().map(|p| p.as_bytes()),
            states.iter().map(|s| s.as_bytes()),
            counter(),
        )
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let trace = context(&[VALID], &["congo=t61rcWkgMzE"]);
        assert!(trace.continued);
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.flags, "01");
        assert_eq!(trace.span_id, "0102030405060708");
        assert_eq!(
            trace.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
        assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(trace.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(
            trace.traceparent_from("1112131415161718"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1112131415161718-01"
        );
        let unsampled = context(
            &["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"],
            &[],
        );
        assert_eq!(unsampled.flags, "00");
        assert_eq!(unsampled.tracestate, None);
    }

    #[test]
    fn anything_else_starts_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // short trace id
            "00-4bf92f3577b34da6a3ce929d0e0e47361-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // invalid version
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // another version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // separators
            "00-4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
            let trace = context(&[bad], &["congo=t61rcWkgMzE"]);
            assert!(!trace.continued, "{bad:?}");
            assert_eq!(trace.tracestate, None, "tracestate dropped with {bad:?}");
            assert_eq!(trace.trace_id.len(), 32);
            assert_ne!(
                trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad:?}"
            );
        }
        let twice = context(&[VALID, VALID], &[]);
        assert!(!twice.continued, "a duplicate header is not continued");
        let none = context(&[], &["congo=t61rcWkgMzE"]);
        assert!(!none.continued);
        assert_eq!(none.parent_id, None);
        assert_eq!(none.tracestate, None);
        assert_eq!(none.flags, "01");
        assert_eq!(none.trace_id, "090a0b0c0d0e0f101112131415161718");
        assert_eq!(
            parse_traceparent(VALID.as_bytes()),
            Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
                parent_id: "00f067aa0ba902b7",
                flags: "01",
            })
        );
    }

    #[test]
    fn generated_ids_are_never_all_zero() {
        let mut calls = 0;
        let trace = TraceContext::from_headers([], [], |buf: &mut [u8]| {
            calls += 1;
            // Zeros the first two times, then ones.
            buf.fill(if calls > 2 { 1 } else { 0 });
        });
        assert_eq!(trace.span_id, "0101010101010101");
        assert_eq!(trace.trace_id, "01010101010101010101010101010101");
    }

    #[test]
    fn tracestate_is_passed_when_well_formed_and_short_enough() {
        let ok = |values: &[&str]| acceptable_tracestate(values.iter().map(|v| v.as_bytes()));
        assert_eq!(
            ok(&["rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"]).as_deref(),
            Some("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
            "passed as it came"
        );
        assert_eq!(
            ok(&["rojo=1", "congo=2"]).as_deref(),
            Some("rojo=1,congo=2"),
            "several lines are one list"
        );
        assert!(ok(&["fw529a3039@dt=FW4;0;0;0;0;0;0;ab,,  vendor/x_y-z*1=a b"]).is_some());
        assert!(ok(&["a=1,\t,b=2"]).is_some());
        for bad in [
            "",
            "   ",
            "novalue",
            "Upper=1",
            "1digit=1",
            "a=1,a=2",
            "a=",
            "a=x,y",
            "a=x=y",
            "a=\u{e9}",
            "toolongsystem@abcdefghijklmno=1",
            "a@=1",
            "@b=1",
        ] {
            assert_eq!(ok(&[bad]), None, "{bad:?}");
        }
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(ok(&[&members.join(",")]), None, "33 members");
        assert!(ok(&[&members[..32].join(",")]).is_some(), "32 members");
        let long_value = "v".repeat(256);
        assert!(ok(&[&format!("a={long_value}")]).is_some());
        assert_eq!(ok(&[&format!("a={long_value}v")]), None, "value over 256");
        let at_limit = format!("a={},b={}", "x".repeat(251), "y".repeat(256));
        assert_eq!(at_limit.len(), 512);
        assert!(ok(&[&at_limit]).is_some(), "512 characters pass");
        let over = format!("a={},b={}", "x".repeat(252), "y".repeat(256));
        assert_eq!(ok(&[&over]), None, "513 characters are dropped");
    }
}
