//! A minimal RESP2 client: encode one command, decode one reply.
//!
//! It exists so tests can talk to Redis without the client library the
//! code under test uses (a bug shared by both would hide itself). It speaks
//! RESP2 only, blocks, and makes no attempt at pipelining or reconnecting.
//!
//! ```no_run
//! # let addr = "127.0.0.1:6400".parse().unwrap();
//! use presence_testkit::resp;
//! let reply = resp::query(addr, &["SET", "k", "v"]).unwrap();
//! assert_eq!(reply.to_string(), "OK");
//! ```

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a command may take before the call fails. Generous, so
/// `DEBUG SLEEP` of a few seconds still answers.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`: the whole line after the `-`, e.g. `WRONGTYPE Operation …`.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3 foo`; `None` is the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*2 …`; `None` is the nil array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Renders a reply the way `redis-cli --raw` would: strings as they are,
/// integers in decimal, nil as `(nil)`, array elements one per line.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) | Reply::Error(s) => f.write_str(s),
            Reply::Integer(n) => write!(f, "{n}"),
            Reply::Bulk(Some(bytes)) => f.write_str(&String::from_utf8_lossy(bytes)),
            Reply::Bulk(None) | Reply::Array(None) => f.write_str("(nil)"),
            Reply::Array(Some(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

/// Opens a connection to `addr`, sends one command and reads its reply.
/// Error replies are `Ok(Reply::Error(..))`; only I/O and protocol
/// failures are `Err`.
pub fn query(addr: SocketAddr, args: &[&str]) -> io::Result<Reply> {
    Connection::open(addr)?.call(args)
}

/// One connection to Redis, for tests that need several commands on the
/// same client (e.g. `SUBSCRIBE`, then read the messages that arrive).
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects with [`COMMAND_TIMEOUT`] as the read and write timeout.
    pub fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads one reply.
    pub fn call(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    /// Sends one command without reading anything.
    pub fn send(&mut self, args: &[&str]) -> io::Result<()> {
        self.reader.get_mut().write_all(&encode(args))
    }

    /// Reads the next reply (or pushed pub/sub message). Fails with
    /// `UnexpectedEof` once the server closed the connection.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// Changes the read timeout, e.g. to check that nothing arrives.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(parse_int(rest)?)),
        "$" => {
            let Ok(len) = usize::try_from(parse_int(rest)?) else {
                return Ok(Reply::Bulk(None));
            };
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(protocol_error("bulk string without CRLF"));
            }
            data.truncate(len);
            Ok(Reply::Bulk(Some(data)))
        }
        "*" => {
            let Ok(len) = usize::try_from(parse_int(rest)?) else {
                return Ok(Reply::Array(None));
            };
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<io::Result<_>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(protocol_error(&format!("unexpected reply line {line:?}"))),
    }
}

/// One line without its CRLF; never empty.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    if !buf.ends_with(b"\r\n") || buf.len() < 3 {
        return Err(protocol_error("reply line without CRLF"));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| protocol_error("reply line is not UTF-8"))
}

fn parse_int(s: &str) -> io::Result<i64> {
    s.parse()
        .map_err(|_| protocol_error(&format!("bad integer {s:?}")))
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("RESP: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Reply {
        read_reply(&mut BufReader::new(bytes)).unwrap()
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(encode(&["SET", "k", ""]).len(), 26);
    }

    #[test]
    fn decodes_every_reply_type() {
        let cases: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"-ERR nope\r\n", Reply::Error("ERR nope".into())),
            (b":-7\r\n", Reply::Integer(-7)),
            (b"$3\r\na\rb\r\n", Reply::Bulk(Some(b"a\rb".to_vec()))),
            (b"$0\r\n\r\n", Reply::Bulk(Some(Vec::new()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n:1\r\n*1\r\n+x\r\n",
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Array(Some(vec![Reply::Simple("x".into())])),
                ])),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                &decode(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn displays_like_redis_cli_raw() {
        let reply = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"a".to_vec())),
            Reply::Integer(2),
            Reply::Bulk(None),
        ]));
        assert_eq!(reply.to_string(), "a\n2\n(nil)");
    }

    #[test]
    fn a_closed_connection_is_an_eof_error() {
        let err = read_reply(&mut BufReader::new(&b""[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
