//! Finds where a chunked HTTP/1.1 body (RFC 9112 §7.1) ends, so that the edge can pass its
//! bytes on unchanged and know when the response is complete: the chunk sizes, the chunk
//! data, the last (zero) chunk and the trailer section are followed, nothing is copied.
//! What it accepts, hyper's client accepts the same way (a body hyper would refuse, or
//! read differently, is malformed here too): the edge never relays a body whose end its
//! client could see elsewhere.

/// Where in the chunked framing the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The hexadecimal size of the next chunk (`digits` read so far).
    Size { size: u64, digits: u8 },
    /// Spaces or tabs after a chunk size: only more of them, an extension or the line's end
    /// may follow.
    SizeLws { size: u64 },
    /// A chunk extension, up to the line's end.
    Extension { size: u64 },
    /// The LF that ends a size line.
    SizeLf { size: u64 },
    /// Chunk data still to come.
    Data { left: u64 },
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// The start of a trailer line (an empty one ends the body).
    TrailerStart,
    /// A trailer field's name.
    TrailerName,
    /// A trailer field's value.
    TrailerValue,
    /// The LF of a trailer line.
    TrailerLf,
    /// The LF of the empty line that ends the body.
    EndLf,
    /// The body is complete.
    Done,
}

/// The body is not well-formed chunked framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body from the instance")]
pub struct Malformed;

/// Follows a chunked body as its bytes go by.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
    /// Bytes of chunk extensions and of trailer lines so far.
    extensions: u32,
    trailers: u32,
    /// Trailer fields so far.
    trailer_fields: u32,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            extensions: 0,
            trailers: 0,
            trailer_fields: 0,
        }
    }
}

/// Most hex digits of a chunk size (2^60 bytes: far beyond any body).
const MAX_SIZE_DIGITS: u8 = 15;
/// Most bytes of chunk extensions in a body, and of its trailer section (hyper refuses
/// past 16 KiB of each).
const MAX_EXTRA_BYTES: u32 = 8 * 1024;
/// Most trailer fields (hyper refuses past 100).
const MAX_TRAILER_FIELDS: u32 = 64;

/// A byte of a field name (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a field value (as httparse and hyper take it).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

impl ChunkedEnd {
    /// Reads `bytes`, the body's next ones: `Ok(Some(n))` when the body ends after the
    /// first `n` of them, `Ok(None)` when it goes on past them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if matches!(
                self.state,
                State::TrailerStart | State::TrailerName | State::TrailerValue | State::TrailerLf
            ) {
                self.trailers += 1;
                if self.trailers > MAX_EXTRA_BYTES {
                    return Err(Malformed);
                }
            }
            self.state = match self.state {
                State::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= MAX_SIZE_DIGITS {
                            return Err(Malformed);
                        }
                        let v = (b as char).to_digit(16).ok_or(Malformed)?;
                        State::Size {
                            size: size * 16 + u64::from(v),
                            digits: digits + 1,
                        }
                    }
                    b' ' | b'\t' if digits > 0 => State::SizeLws { size },
                    b';' if digits > 0 => State::Extension { size },
                    b'\r' if digits > 0 => State::SizeLf { size },
                    _ => return Err(Malformed),
                },
                State::SizeLws { size } => match b {
                    b' ' | b'\t' => State::SizeLws { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(Malformed),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(Malformed),
                    _ => {
                        self.extensions += 1;
                        if self.extensions > MAX_EXTRA_BYTES {
                            return Err(Malformed);
                        }
                        State::Extension { size }
                    }
                },
                State::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', left) => State::Data { left },
                    _ => return Err(Malformed),
                },
                State::Data { left } => {
                    // Skip the data in one step.
                    let take = (left as usize).min(bytes.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
                State::DataCr | State::DataLf => return Err(Malformed),
                // A trailer field is `name: value` (hyper parses the trailer section as
                // header fields, and fails the body when it does not parse).
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b if is_tchar(b) => {
                        self.trailer_fields += 1;
                        if self.trailer_fields > MAX_TRAILER_FIELDS {
                            return Err(Malformed);
                        }
                        State::TrailerName
                    }
                    _ => return Err(Malformed),
                },
                State::TrailerName => match b {
                    b':' => State::TrailerValue,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(Malformed),
                },
                State::TrailerValue => match b {
                    b'\r' => State::TrailerLf,
                    b if is_value_byte(b) => State::TrailerValue,
                    _ => return Err(Malformed),
                },
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                State::TrailerLf | State::EndLf => return Err(Malformed),
                State::Done => return Ok(Some(i)),
            };
            i += 1;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8]) -> Result<Option<usize>, Malformed> {
        ChunkedEnd::default().feed(body)
    }

    #[test]
    fn finds_the_end_of_a_body_in_one_piece_or_byte_by_byte() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(end_of(body), Ok(Some(body.len() - 4)));
        let mut end = ChunkedEnd::default();
        let mut found = None;
        for (i, b) in body.iter().enumerate() {
            if let Some(n) = end.feed(std::slice::from_ref(b)).unwrap() {
                found = Some(i + n);
                break;
            }
        }
        assert_eq!(found, Some(body.len() - 4));
    }

    #[test]
    fn follows_trailers_and_waits_for_more() {
        let body = b"3\r\nabc\r\n0\r\nx-checksum: 1\r\nx-other: 2\r\n\r\n";
        assert_eq!(end_of(body), Ok(Some(body.len())));
        assert_eq!(end_of(&body[..body.len() - 1]), Ok(None));
        assert_eq!(end_of(b"10\r\nonly part"), Ok(None));
    }

    #[test]
    fn refuses_what_is_not_chunked_framing() {
        assert_eq!(end_of(b"zz\r\n"), Err(Malformed));
        assert_eq!(end_of(b"\r\n"), Err(Malformed));
        assert_eq!(end_of(b"3\r\nabcX"), Err(Malformed));
        assert_eq!(end_of(b"3\nabc"), Err(Malformed));
        assert_eq!(end_of(b"ffffffffffffffffff\r\n"), Err(Malformed));
        // Whitespace after a size is only followed by more, an extension or the line's end.
        assert_eq!(end_of(b"3 x\r\nabc\r\n"), Err(Malformed));
        assert_eq!(end_of(b"3 \t;a=b\r\nabc\r\n0\r\n\r\n"), Ok(Some(19)));
        // Trailer lines are header fields.
        assert_eq!(end_of(b"0\r\nno colon\r\n\r\n"), Err(Malformed));
        assert_eq!(end_of(b"0\r\n x: folded\r\n\r\n"), Err(Malformed));
        assert_eq!(end_of(b"0\r\nx: a\x01b\r\n\r\n"), Err(Malformed));
        assert_eq!(end_of(b"0\r\nx:\r\n\r\n"), Ok(Some(9)));
        // Extensions and trailers are bounded.
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', 9000));
        assert_eq!(end_of(&long), Err(Malformed));
    }
}
