//! RESP2, the Redis wire protocol: encoding commands and parsing replies.
//!
//! The daemon sends a handful of commands and reads small replies, so this is
//! a plain, allocation-light parser over a byte buffer rather than a parser
//! combinator: replies are parsed only once complete, and a reply that claims
//! more than [`REPLY_MAX`] bytes is a protocol error, never a reason to buffer.

use std::fmt;

/// The largest reply accepted; `INFO` and the daemon's lists are kilobytes.
pub(crate) const REPLY_MAX: usize = 16 << 20;

/// Nesting deeper than this is refused (Redis replies here are at most two deep).
const DEPTH_MAX: usize = 8;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`: the server refused the command.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`, or `$-1` (nil) as `None`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n…`, or `*-1` (nil) as `None`.
    Array(Option<Vec<Reply>>),
}

/// Bytes that are not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> ProtocolError {
    ProtocolError(what.into())
}

/// Commands to send in one write, encoded as RESP arrays of bulk strings.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: usize,
}

impl Commands {
    /// One command.
    pub(crate) fn one(args: &[&[u8]]) -> Self {
        let mut commands = Self::default();
        commands.push(args);
        commands
    }

    /// Appends a command.
    pub(crate) fn push(&mut self, args: &[&[u8]]) -> &mut Self {
        let mut number = itoa::Buffer::new();
        self.bytes.push(b'*');
        self.bytes
            .extend_from_slice(number.format(args.len()).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        for arg in args {
            self.bytes.push(b'$');
            self.bytes
                .extend_from_slice(number.format(arg.len()).as_bytes());
            self.bytes.extend_from_slice(b"\r\n");
            self.bytes.extend_from_slice(arg);
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.count += 1;
        self
    }
}

/// Parses one reply from the front of `buf`: `Ok(None)` if it is not all
/// there yet, else the reply and the bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut at = 0;
    match parse_at(buf, &mut at, 0)? {
        Some(reply) => Ok(Some((reply, at))),
        None => Ok(None),
    }
}

fn parse_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    if depth > DEPTH_MAX {
        return Err(bad("reply nested too deep"));
    }
    let Some((kind, line)) = line(buf, at)? else {
        return Ok(None);
    };
    let text = || {
        std::str::from_utf8(line)
            .map(str::to_owned)
            .map_err(|_| bad("a status line that is not UTF-8"))
    };
    Ok(Some(match kind {
        b'+' => Reply::Simple(text()?),
        b'-' => Reply::Error(text()?),
        b':' => Reply::Integer(integer(line)?),
        b'$' => {
            let length = integer(line)?;
            if length < 0 {
                return Ok(Some(Reply::Bulk(None)));
            }
            let length = usize::try_from(length)
                .ok()
                .filter(|&n| n <= REPLY_MAX)
                .ok_or_else(|| bad(format!("a bulk string of {length} bytes")))?;
            let end = *at + length;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(bad("a bulk string not ended by CRLF"));
            }
            let bytes = buf[*at..end].to_vec();
            *at = end + 2;
            Reply::Bulk(Some(bytes))
        }
        b'*' => {
            let count = integer(line)?;
            if count < 0 {
                return Ok(Some(Reply::Array(None)));
            }
            // Every element takes at least 3 bytes, which bounds the count.
            let count = usize::try_from(count)
                .ok()
                .filter(|&n| n <= REPLY_MAX / 3)
                .ok_or_else(|| bad(format!("an array of {count} elements")))?;
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match parse_at(buf, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(items))
        }
        other => {
            return Err(bad(format!(
                "a reply starting with byte {other:#04x}, which is not RESP2"
            )))
        }
    }))
}

/// The type byte and the rest of the line at `at`, moving past its CRLF.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<(u8, &'a [u8])>, ProtocolError> {
    let rest = &buf[*at..];
    let Some(end) = memchr_crlf(rest) else {
        if rest.len() > 64 * 1024 {
            return Err(bad("a reply line longer than 64 KiB"));
        }
        return Ok(None);
    };
    if end == 0 {
        return Err(bad("an empty reply line"));
    }
    let line = (rest[0], &rest[1..end]);
    *at += end + 2;
    Ok(Some(line))
}

fn memchr_crlf(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'\r') {
        let i = from + i;
        match bytes.get(i + 1) {
            Some(b'\n') => return Some(i),
            Some(_) => from = i + 1,
            None => return None,
        }
    }
    None
}

fn integer(line: &[u8]) -> Result<i64, ProtocolError> {
    let not_integer = || {
        bad(format!(
            "{:?} is not an integer",
            String::from_utf8_lossy(line)
        ))
    };
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(not_integer());
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(not_integer());
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(digit - b'0')))
            .ok_or_else(not_integer)?;
    }
    Ok(if negative { -value } else { value })
}

impl Reply {
    /// What the command got instead of what it wanted, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Simple(s) => format!("status {s:?}"),
            Self::Error(e) => format!("error {e:?}"),
            Self::Integer(n) => format!("integer {n}"),
            Self::Bulk(None) | Self::Array(None) => "nil".to_owned(),
            Self::Bulk(Some(b)) => format!("a bulk string of {} bytes", b.len()),
            Self::Array(Some(items)) => format!("an array of {} elements", items.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_arrays_of_bulk_strings() {
        let mut commands = Commands::one(&[b"LRANGE", b"k", b"-50", b"-1"]);
        commands.push(&[b"PING"]);
        assert_eq!(
            commands.bytes,
            b"*4\r\n$6\r\nLRANGE\r\n$1\r\nk\r\n$3\r\n-50\r\n$2\r\n-1\r\n*1\r\n$4\r\nPING\r\n"
        );
        assert_eq!(commands.count, 2);
    }

    #[test]
    fn parses_every_type() {
        let wire = b"+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\rb\r\n$-1\r\n*2\r\n$1\r\nx\r\n*1\r\n:1\r\n*-1\r\n$0\r\n\r\n";
        let mut at = 0;
        let mut replies = Vec::new();
        while at < wire.len() {
            let (reply, used) = parse(&wire[at..]).unwrap().unwrap();
            replies.push(reply);
            at += used;
        }
        assert_eq!(
            replies,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Integer(-7),
                Reply::Bulk(Some(b"a\rb".to_vec())),
                Reply::Bulk(None),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"x".to_vec())),
                    Reply::Array(Some(vec![Reply::Integer(1)])),
                ])),
                Reply::Array(None),
                Reply::Bulk(Some(Vec::new())),
            ]
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_not_an_error() {
        let wire = b"*3\r\n$5\r\nhello\r\n:12\r\n*1\r\n+OK\r\n";
        for end in 0..wire.len() {
            assert_eq!(parse(&wire[..end]), Ok(None), "{end}");
        }
        assert_eq!(parse(wire).unwrap().unwrap().1, wire.len());
    }

    #[test]
    fn refuses_what_is_not_resp() {
        assert!(parse(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse(b"$abc\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(b"\r\n").is_err());
        assert!(parse(b":-\r\n").is_err());
        assert!(parse(b":1a\r\n").is_err());
        assert!(parse(b":99999999999999999999\r\n").is_err());
        assert_eq!(
            parse(b":-9223372036854775807\r\n").unwrap().unwrap().0,
            Reply::Integer(-i64::MAX)
        );
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
    }
}
