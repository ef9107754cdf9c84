//! Finds where a chunked HTTP/1.1 body (RFC 9112 §7.1) ends, so that the edge can pass its
//! bytes on unchanged and know when the response is complete: the chunk sizes, the chunk
//! data, the last (zero) chunk and the trailer section are followed, nothing is copied.

/// Where in the chunked framing the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The hexadecimal size of the next chunk (`digits` read so far).
    Size { size: u64, digits: u8 },
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
    /// Inside a trailer field line.
    TrailerLine,
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
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

/// Most hex digits of a chunk size (2^60 bytes: far beyond any body).
const MAX_SIZE_DIGITS: u8 = 15;

impl ChunkedEnd {
    /// Reads `bytes`, the body's next ones: `Ok(Some(n))` when the body ends after the
    /// first `n` of them, `Ok(None)` when it goes on past them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
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
                    b';' | b' ' | b'\t' if digits > 0 => State::Extension { size },
                    b'\r' if digits > 0 => State::SizeLf { size },
                    _ => return Err(Malformed),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(Malformed),
                    _ => State::Extension { size },
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
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(Malformed),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(Malformed),
                    _ => State::TrailerLine,
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
    }
}
