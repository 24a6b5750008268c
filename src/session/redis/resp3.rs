//! Just enough RESP3 for the tracking connection: frames, read whole or in pieces.

/// Whether a push is an `invalidate` message.
pub(super) fn is_invalidation(items: &[Frame]) -> bool {
    matches!(items.first(), Some(Frame::Bulk(kind)) if kind.eq_ignore_ascii_case(b"invalidate"))
}

/// The RESP3 values this connection meets, with the payloads it needs.
#[derive(Debug, PartialEq)]
pub(super) enum Frame {
    Simple(String),
    Error(String),
    Bulk(Vec<u8>),
    Null,
    Integer(i64),
    Array(Vec<Frame>),
    Push(Vec<Frame>),
    /// Doubles, booleans, big numbers, maps, sets, attributes: read whole, not needed here.
    Other,
}

#[derive(Default)]
pub(super) struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    pub(super) fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        match parse(&self.buffer, 0)? {
            Some((frame, used)) => {
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }
}

/// One line ending in CRLF at `at`: its text and where the next thing starts.
fn line(buffer: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buffer.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| "malformed length in a RESP3 frame".to_owned())
}

/// Parses one frame at `at`; `None` when the buffer holds only part of it.
pub(super) fn parse(buffer: &[u8], at: usize) -> Result<Option<(Frame, usize)>, String> {
    let Some(&kind) = buffer.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buffer, at + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    match kind {
        b'+' => Ok(Some((Frame::Simple(text()), next))),
        b'-' => Ok(Some((Frame::Error(text()), next))),
        b':' => Ok(Some((Frame::Integer(number(head)?), next))),
        b',' | b'#' | b'(' => Ok(Some((Frame::Other, next))),
        b'_' => Ok(Some((Frame::Null, next))),
        b'$' | b'=' | b'!' => {
            let length = number(head)?;
            if length < 0 {
                return Ok(Some((Frame::Null, next)));
            }
            let end = next + length as usize;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            let payload = buffer[next..end].to_vec();
            let frame = if kind == b'!' {
                Frame::Error(String::from_utf8_lossy(&payload).into_owned())
            } else {
                Frame::Bulk(payload)
            };
            Ok(Some((frame, end + 2)))
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let count = number(head)?;
            if count < 0 {
                return Ok(Some((Frame::Null, next)));
            }
            let items = if matches!(kind, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            let mut position = next;
            let mut children = Vec::new();
            for _ in 0..items {
                match parse(buffer, position)? {
                    Some((child, after)) => {
                        children.push(child);
                        position = after;
                    }
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute precedes the value it describes.
                return parse(buffer, position);
            }
            let frame = match kind {
                b'*' => Frame::Array(children),
                b'>' => Frame::Push(children),
                _ => Frame::Other,
            };
            Ok(Some((frame, position)))
        }
        other => Err(format!(
            "unexpected RESP3 type byte 0x{other:02x} on the tracking connection"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Frame {
        let (frame, used) = parse(bytes, 0).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        frame
    }

    #[test]
    fn invalidation_pushes_parse_whole_and_in_pieces() {
        let push = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$7\r\ng:s:{a}\r\n$7\r\ng:s:{b}\r\n";
        let frame = whole(push);
        let Frame::Push(items) = frame else {
            panic!("not a push")
        };
        assert!(is_invalidation(&items));
        assert_eq!(
            items[1],
            Frame::Array(vec![
                Frame::Bulk(b"g:s:{a}".to_vec()),
                Frame::Bulk(b"g:s:{b}".to_vec())
            ])
        );
        for cut in 0..push.len() {
            assert_eq!(parse(&push[..cut], 0).expect("valid"), None, "cut at {cut}");
        }
        // After FLUSHALL the keys are a null.
        let Frame::Push(items) = whole(b">2\r\n$10\r\ninvalidate\r\n_\r\n") else {
            panic!("not a push")
        };
        assert_eq!(items[1], Frame::Null);
    }

    #[test]
    fn hello_maps_and_errors_parse() {
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n";
        assert_eq!(whole(hello), Frame::Other);
        assert_eq!(
            whole(b"-WRONGPASS invalid username-password pair\r\n"),
            Frame::Error("WRONGPASS invalid username-password pair".into())
        );
        assert_eq!(whole(b"+PONG\r\n"), Frame::Simple("PONG".into()));
        assert!(parse(b"?what\r\n", 0).is_err());
    }
}
