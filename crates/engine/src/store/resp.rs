//! The lean read path of one Redis: `HMGET` and `XRANGE`/`XREVRANGE` pipelines on connections
//! of its own, their replies read straight from the socket's bytes.
//!
//! redis-rs parses every reply into a `Value` tree (a vector per entry, a vector per field
//! list, a buffer per string), and for a page of history that parse was half of the server's
//! work. Here a reply is checked for completeness on the bytes as they arrive ([`frame_end`])
//! and then walked in place by a pull parser ([`Parser`]) that hands each entry's fields to the
//! reader's sink as slices of the read buffer: no allocation per entry. History, download and
//! search all read through it ([`super::redis::RedisStore`]'s `read`).
//!
//! The parser takes every reply shape Redis can send, RESP2 and RESP3 (these connections never
//! ask for RESP3, so they get RESP2): errors (simple and blob), nil (`$-1`, `*-1`, `_`),
//! attributes before a value, maps for field lists; a shape it does not expect where an entry
//! should be is an error, never a panic (property tests below). A cluster's backend keeps the
//! generic path: its replies may be `MOVED`/`ASK` redirections, which redis-rs's cluster client
//! follows and refreshes its slot map for.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UnixStream},
    sync::Semaphore,
};

use super::{EntryRef, Job, Scanned, StoreError, StoreResult, job_from_fields};
use crate::ids::StreamId;

/// Why bytes are not (yet) a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// More bytes are needed.
    Incomplete,
    /// Not RESP, or not the shape the reply should have.
    Protocol(&'static str),
}

type ParseResult<T> = Result<T, ParseError>;

/// One RESP value's head, as a pull parser reads it: scalars with their bytes, aggregates
/// with the number of values that follow (a map's: twice its pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `+`, `$`, `=` (without its `txt:` prefix), `,`, `(` and `#`: the value's bytes.
    Bytes(&'a [u8]),
    /// `:`.
    Int(i64),
    /// `-` and `!`: an error reply.
    Error(&'a [u8]),
    /// `$-1`, `*-1`, `_`.
    Nil,
    /// `*`, `~`, `>` (n values follow) and `%` (2n values follow).
    Aggregate(usize),
}

/// A pull parser over bytes holding RESP values.
pub struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The line after the type byte, up to `\r\n`.
    fn line(&mut self) -> ParseResult<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        // Lengths and counts are short: look at them directly before asking memchr.
        let near = rest.iter().take(24).position(|&b| b == b'\r');
        let Some(cr) = near.or_else(|| memchr::memchr(b'\r', rest)) else {
            return Err(ParseError::Incomplete);
        };
        match rest.get(cr + 1) {
            None => return Err(ParseError::Incomplete),
            Some(b'\n') => {}
            Some(_) => return Err(ParseError::Protocol("a line without \\r\\n")),
        }
        self.pos += cr + 2;
        Ok(&rest[..cr])
    }

    /// An optionally negative decimal number at the position (at most 18 digits).
    fn digits(&mut self) -> ParseResult<i64> {
        let rest = &self.buf[self.pos..];
        let negative = rest.first() == Some(&b'-');
        let mut i = usize::from(negative);
        let first = i;
        let mut n: i64 = 0;
        while let Some(&b) = rest.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            if i - first == 18 {
                return Err(ParseError::Protocol("a number too long"));
            }
            n = n * 10 + i64::from(b - b'0');
            i += 1;
        }
        if i == first {
            return Err(if i == rest.len() {
                ParseError::Incomplete
            } else {
                ParseError::Protocol("a bad length or integer")
            });
        }
        self.pos += i;
        Ok(if negative { -n } else { n })
    }

    /// A number and the `\r\n` after it: the head of lengths, counts and integers.
    fn number(&mut self) -> ParseResult<i64> {
        let n = self.digits()?;
        match self.buf.get(self.pos..self.pos + 2) {
            Some(b"\r\n") => {
                self.pos += 2;
                Ok(n)
            }
            Some(_) => Err(ParseError::Protocol("a bad length or integer")),
            None if self.buf.get(self.pos).is_none_or(|&b| b == b'\r') => {
                Err(ParseError::Incomplete)
            }
            None => Err(ParseError::Protocol("a bad length or integer")),
        }
    }

    /// A length-prefixed payload (`$`, `=`, `!`): `None` for `-1`.
    fn blob(&mut self, len: i64) -> ParseResult<Option<&'a [u8]>> {
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| ParseError::Protocol("a negative length"))?;
        let rest = &self.buf[self.pos..];
        if rest.len() < len + 2 {
            return Err(ParseError::Incomplete);
        }
        if &rest[len..len + 2] != b"\r\n" {
            return Err(ParseError::Protocol("a payload longer than its length"));
        }
        self.pos += len + 2;
        Ok(Some(&rest[..len]))
    }

    fn count(n: i64, per: usize) -> ParseResult<Frame<'static>> {
        match n {
            -1 => Ok(Frame::Nil),
            n => usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(per))
                .map(Frame::Aggregate)
                .ok_or(ParseError::Protocol("a negative count")),
        }
    }

    /// The next value's head (attributes before it skipped). On an error the position is
    /// where it was, so that parsing can resume once more bytes came.
    pub fn next_frame(&mut self) -> ParseResult<Frame<'a>> {
        let origin = self.pos;
        let frame = self.next_inner();
        if frame.is_err() {
            self.pos = origin;
        }
        frame
    }

    fn next_inner(&mut self) -> ParseResult<Frame<'a>> {
        loop {
            let Some(&kind) = self.buf.get(self.pos) else {
                return Err(ParseError::Incomplete);
            };
            self.pos += 1;
            let frame = match kind {
                b'+' | b',' | b'(' | b'#' => Frame::Bytes(self.line()?),
                b'-' => Frame::Error(self.line()?),
                b'_' => {
                    self.line()?;
                    Frame::Nil
                }
                b':' => Frame::Int(self.number()?),
                b'$' => {
                    let len = self.number()?;
                    self.blob(len)?.map_or(Frame::Nil, Frame::Bytes)
                }
                b'=' => {
                    let len = self.number()?;
                    match self.blob(len)? {
                        Some(text) if text.len() >= 4 => Frame::Bytes(&text[4..]),
                        Some(_) => {
                            return Err(ParseError::Protocol(
                                "a verbatim string without its format",
                            ));
                        }
                        None => Frame::Nil,
                    }
                }
                b'!' => {
                    let len = self.number()?;
                    self.blob(len)?.map_or(Frame::Nil, Frame::Error)
                }
                b'*' | b'~' | b'>' => Self::count(self.number()?, 1)?,
                b'%' => Self::count(self.number()?, 2)?,
                b'|' => {
                    // Attributes describe the value that follows: skip them.
                    let Frame::Aggregate(n) = Self::count(self.number()?, 2)? else {
                        return Err(ParseError::Protocol("nil attributes"));
                    };
                    for _ in 0..n {
                        self.skip()?;
                    }
                    continue;
                }
                _ => return Err(ParseError::Protocol("an unknown type byte")),
            };
            return Ok(frame);
        }
    }

    /// Skips one whole value.
    pub fn skip(&mut self) -> ParseResult<()> {
        let mut left: usize = 1;
        while left > 0 {
            left -= 1;
            if let Frame::Aggregate(n) = self.next_frame()? {
                left = left
                    .checked_add(n)
                    .ok_or(ParseError::Protocol("too many values"))?;
            }
        }
        Ok(())
    }

    /// The next value as bytes (a string, or an integer's digits are not expected here).
    fn bytes(&mut self) -> ParseResult<Option<&'a [u8]>> {
        match self.next_frame()? {
            Frame::Bytes(b) => Ok(Some(b)),
            Frame::Nil => Ok(None),
            Frame::Aggregate(n) => {
                for _ in 0..n {
                    self.skip()?;
                }
                Ok(None)
            }
            Frame::Int(_) | Frame::Error(_) => Ok(None),
        }
    }
}

/// Where the first whole value in `buf` ends; `Incomplete` until all of it is there.
pub fn frame_end(buf: &[u8]) -> ParseResult<usize> {
    let mut progress = Progress::default();
    progress.advance(buf)?;
    Ok(progress.pos)
}

/// How far the completeness check of a reply got: it resumes there when more bytes come, so a
/// large reply read in many pieces is checked once, not once a piece.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Where the next value starts.
    pos: usize,
    /// Values still to come before the reply is whole.
    left: usize,
}

impl Default for Progress {
    fn default() -> Self {
        Self { pos: 0, left: 1 }
    }
}

impl Progress {
    /// Moves over the whole values in `buf` from where it stopped; `Ok` once the reply is
    /// whole (`self.pos` is then its end).
    pub fn advance(&mut self, buf: &[u8]) -> ParseResult<()> {
        let mut parser = Parser { buf, pos: self.pos };
        while self.left > 0 {
            let frame = parser.next_frame()?;
            self.left -= 1;
            if let Frame::Aggregate(n) = frame {
                self.left = self
                    .left
                    .checked_add(n)
                    .ok_or(ParseError::Protocol("too many values"))?;
            }
            self.pos = parser.pos;
        }
        Ok(())
    }
}

fn protocol(what: &'static str) -> StoreError {
    StoreError::Other(format!("unexpected reply: {what}"))
}

/// An error reply as the store's error: `WRONGTYPE` is an answer, the rest are failures.
fn error_reply(message: &[u8]) -> StoreError {
    if message.starts_with(b"WRONGTYPE") {
        StoreError::WrongType
    } else {
        StoreError::Other(format!("redis error: {}", String::from_utf8_lossy(message)))
    }
}

fn parse_err(err: ParseError) -> StoreError {
    match err {
        ParseError::Incomplete => protocol("cut short"),
        ParseError::Protocol(what) => protocol(what),
    }
}

/// Hands the entries of a whole `XRANGE`/`XREVRANGE` reply to `sink`.
pub fn scan_range(
    reply: &[u8],
    sink: &mut (dyn FnMut(EntryRef<'_>) + Send + '_),
) -> StoreResult<Scanned> {
    let mut p = Parser::new(reply);
    let mut scanned = Scanned::default();
    let entries = match p.next_frame().map_err(parse_err)? {
        Frame::Nil => return Ok(scanned),
        Frame::Error(message) => return Err(error_reply(message)),
        Frame::Aggregate(n) => n,
        _ => return Err(protocol("a range is not an array")),
    };
    for _ in 0..entries {
        let parts = match p.next_frame().map_err(parse_err)? {
            Frame::Aggregate(n) if n >= 1 => n,
            _ => return Err(protocol("an entry is not an array")),
        };
        let id = match p.next_frame().map_err(parse_err)? {
            Frame::Bytes(id) => StreamId::parse_bytes(id).map_err(|_| protocol("a bad id"))?,
            _ => return Err(protocol("an entry without an id")),
        };
        let mut entry = EntryRef {
            id,
            ..EntryRef::default()
        };
        if parts >= 2 {
            match p.next_frame().map_err(parse_err)? {
                Frame::Nil => {}
                Frame::Aggregate(n) if n % 2 == 0 => {
                    for _ in 0..n / 2 {
                        let name = p.bytes().map_err(parse_err)?;
                        let value = p.bytes().map_err(parse_err)?;
                        if let (Some(name), Some(value)) = (name, value) {
                            EntryRef::set(&mut entry, name, value);
                        }
                    }
                }
                _ => return Err(protocol("a field list of odd length")),
            }
            for _ in 2..parts {
                p.skip().map_err(parse_err)?;
            }
        }
        scanned.count(&entry);
        sink(entry);
    }
    Ok(scanned)
}

/// A whole `HMGET user_id status` reply as a job record (see [`job_from_fields`]).
pub fn job_record(reply: &[u8]) -> StoreResult<Option<Job>> {
    let mut p = Parser::new(reply);
    match p.next_frame().map_err(parse_err)? {
        Frame::Error(message) => match error_reply(message) {
            // A `job:{id}` of another type is no such job.
            StoreError::WrongType => Ok(None),
            err => Err(err),
        },
        Frame::Aggregate(2) => {
            let user_id = p.bytes().map_err(parse_err)?;
            let status = p.bytes().map_err(parse_err)?;
            Ok(job_from_fields(user_id, status))
        }
        _ => Err(protocol("HMGET is not a pair")),
    }
}

/// Appends a command in RESP.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the Redis is.
#[derive(Clone, Debug)]
enum Addr {
    Tcp(String, u16),
    Unix(PathBuf),
}

enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes).await,
            Self::Unix(s) => s.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read_buf(buf).await,
            Self::Unix(s) => s.read_buf(buf).await,
        }
    }
}

/// A connection and its read buffer.
struct Conn {
    socket: Socket,
    buf: Vec<u8>,
}

/// Most bytes a connection keeps for its next reply when it goes back to the pool.
const KEEP_BUFFER: usize = 256 * 1024;
/// How much a read asks the socket for at least.
const READ_CHUNK: usize = 64 * 1024;

impl Conn {
    /// Sends `request` (one or more commands) and hands each of `replies` whole replies to
    /// `each`, in order.
    async fn exchange(
        &mut self,
        request: &[u8],
        replies: usize,
        each: &mut (dyn FnMut(usize, &[u8]) -> StoreResult<()> + Send),
    ) -> Result<(), Failure> {
        self.socket.write_all(request).await.map_err(Failure::Io)?;
        self.buf.clear();
        let mut start = 0;
        for i in 0..replies {
            let mut progress = Progress {
                pos: start,
                left: 1,
            };
            let end = loop {
                match progress.advance(&self.buf) {
                    Ok(()) => break progress.pos,
                    Err(ParseError::Incomplete) => {
                        self.buf.reserve(READ_CHUNK);
                        match self.socket.read_buf(&mut self.buf).await {
                            Ok(0) => {
                                return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
                            }
                            Ok(_) => {}
                            Err(err) => return Err(Failure::Io(err)),
                        }
                    }
                    Err(ParseError::Protocol(what)) => return Err(Failure::Store(protocol(what))),
                }
            };
            each(i, &self.buf[start..end]).map_err(Failure::Store)?;
            start = end;
        }
        if start != self.buf.len() {
            return Err(Failure::Store(protocol("more than was asked for")));
        }
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// How an exchange failed: on the connection (it is dropped, and a reused one is retried
/// once), or in what a reply said.
enum Failure {
    Io(std::io::Error),
    Store(StoreError),
}

/// Connections of the lean path, at most `size` at once; they connect when first needed.
pub struct RawPool {
    addr: Addr,
    /// `AUTH` and `SELECT`, sent on every new connection.
    hello: Vec<u8>,
    hello_replies: usize,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    timeout: Duration,
}

impl RawPool {
    /// A pool for the Redis behind `url` (TCP or a Unix socket; redis-rs is built without TLS).
    pub fn new(url: &str, size: usize, timeout: Duration) -> anyhow::Result<Self> {
        let info = redis::Client::open(url)?.get_connection_info().clone();
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            redis::ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            other => anyhow::bail!("REDIS_URL names {other}, which buildlogs cannot connect to"),
        };
        let redis = info.redis_settings();
        let mut hello = Vec::new();
        let mut hello_replies = 0;
        if let Some(password) = redis.password() {
            match redis.username() {
                Some(user) => encode(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            hello_replies += 1;
        }
        if redis.db() != 0 {
            encode(&mut hello, &[b"SELECT", redis.db().to_string().as_bytes()]);
            hello_replies += 1;
        }
        Ok(Self {
            addr,
            hello,
            hello_replies,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            timeout,
        })
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let socket = match &self.addr {
            Addr::Tcp(host, port) => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(Failure::Io)?;
                let _ = tcp.set_nodelay(true);
                Socket::Tcp(tcp)
            }
            Addr::Unix(path) => Socket::Unix(UnixStream::connect(path).await.map_err(Failure::Io)?),
        };
        let mut conn = Conn {
            socket,
            buf: Vec::new(),
        };
        if self.hello_replies > 0 {
            let hello = self.hello.clone();
            conn.exchange(
                &hello,
                self.hello_replies,
                &mut |_, reply| match Parser::new(reply).next_frame() {
                    Ok(Frame::Error(message)) => Err(error_reply(message)),
                    _ => Ok(()),
                },
            )
            .await?;
        }
        Ok(conn)
    }

    /// Sends `request` (`replies` commands) and hands each whole reply to `each`, within the
    /// timeout; a pooled connection that turns out dead is replaced once.
    pub async fn run(
        &self,
        request: &[u8],
        replies: usize,
        each: &mut (dyn FnMut(usize, &[u8]) -> StoreResult<()> + Send),
    ) -> StoreResult<()> {
        let attempt = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| StoreError::Unavailable("the pool is closed".into()))?;
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.connect().await.map_err(into_store)?,
            };
            let mut seen = 0;
            let mut counted = |i: usize, reply: &[u8]| {
                seen = i + 1;
                each(i, reply)
            };
            match conn.exchange(request, replies, &mut counted).await {
                Ok(()) => {}
                // The server closed an idle connection (a restart, a timeout): once more on
                // a fresh one, unless a reply already reached the caller.
                Err(Failure::Io(_)) if reused && seen == 0 => {
                    conn = self.connect().await.map_err(into_store)?;
                    conn.exchange(request, replies, each)
                        .await
                        .map_err(into_store)?;
                }
                Err(err) => return Err(into_store(err)),
            }
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            Ok(())
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("a read timed out".into())))
    }
}

fn into_store(failure: Failure) -> StoreError {
    match failure {
        Failure::Io(err) => StoreError::Unavailable(err.to_string()),
        Failure::Store(err) => err,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A RESP value of any shape, RESP2 and RESP3.
    #[derive(Clone, Debug)]
    enum V {
        Simple(String),
        Error(String),
        Int(i64),
        Bulk(Vec<u8>),
        NilBulk,
        NilArray,
        Null,
        Array(Vec<V>),
        Map(Vec<(V, V)>),
        Set(Vec<V>),
        Double(String),
        Bool(bool),
        Verbatim(Vec<u8>),
        BlobError(Vec<u8>),
        Attributed(Vec<(V, V)>, Box<V>),
    }

    fn encode_value(v: &V, out: &mut Vec<u8>) {
        match v {
            V::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            V::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            V::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            V::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            V::NilBulk => out.extend_from_slice(b"$-1\r\n"),
            V::NilArray => out.extend_from_slice(b"*-1\r\n"),
            V::Null => out.extend_from_slice(b"_\r\n"),
            V::Array(items) | V::Set(items) => {
                let kind = if matches!(v, V::Array(_)) { '*' } else { '~' };
                out.extend_from_slice(format!("{kind}{}\r\n", items.len()).as_bytes());
                items.iter().for_each(|i| encode_value(i, out));
            }
            V::Map(pairs) | V::Attributed(pairs, _) => {
                let kind = if matches!(v, V::Map(_)) { '%' } else { '|' };
                out.extend_from_slice(format!("{kind}{}\r\n", pairs.len()).as_bytes());
                for (k, v) in pairs {
                    encode_value(k, out);
                    encode_value(v, out);
                }
                if let V::Attributed(_, value) = v {
                    encode_value(value, out);
                }
            }
            V::Double(d) => out.extend_from_slice(format!(",{d}\r\n").as_bytes()),
            V::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            V::Verbatim(b) => {
                out.extend_from_slice(format!("={}\r\ntxt:", b.len() + 4).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            V::BlobError(b) => {
                out.extend_from_slice(format!("!{}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn any_value() -> impl Strategy<Value = V> {
        let line = "[a-zA-Z0-9 :._-]{0,12}";
        let leaf = prop_oneof![
            line.prop_map(V::Simple),
            line.prop_map(V::Error),
            any::<i32>().prop_map(|i| V::Int(i64::from(i))),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(V::Bulk),
            Just(V::NilBulk),
            Just(V::NilArray),
            Just(V::Null),
            "-?[0-9]{1,5}\\.[0-9]{1,3}".prop_map(V::Double),
            any::<bool>().prop_map(V::Bool),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(V::Verbatim),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(V::BlobError),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(V::Array),
                prop::collection::vec(inner.clone(), 0..4).prop_map(V::Set),
                prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(V::Map),
                (
                    prop::collection::vec((inner.clone(), inner.clone()), 1..2),
                    inner
                )
                    .prop_map(|(a, v)| V::Attributed(a, Box::new(v))),
            ]
        })
    }

    /// An `XRANGE` reply of entries with the four fields (some missing, some extra), as RESP2
    /// arrays or RESP3 maps.
    /// Entries as written: an id and field/value pairs.
    type Entries = Vec<(StreamId, Vec<(String, Vec<u8>)>)>;

    fn any_range() -> impl Strategy<Value = (Entries, bool)> {
        let field = (
            prop_oneof![
                Just("ts"),
                Just("source"),
                Just("text"),
                Just("phase"),
                Just("extra")
            ],
            prop::collection::vec(any::<u8>(), 0..30),
        )
            .prop_map(|(n, v)| (n.to_owned(), v));
        (
            prop::collection::vec(
                (
                    (any::<u64>(), any::<u64>()),
                    prop::collection::vec(field, 0..6),
                ),
                0..8,
            )
            .prop_map(|entries| {
                entries
                    .into_iter()
                    .map(|((ms, seq), fields)| (StreamId::new(ms, seq), fields))
                    .collect()
            }),
            any::<bool>(),
        )
    }

    fn range_value(entries: &Entries, maps: bool) -> V {
        V::Array(
            entries
                .iter()
                .map(|(id, fields)| {
                    let pairs: Vec<(V, V)> = fields
                        .iter()
                        .map(|(n, v)| (V::Bulk(n.clone().into_bytes()), V::Bulk(v.clone())))
                        .collect();
                    let fields = if maps {
                        V::Map(pairs)
                    } else {
                        V::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
                    };
                    V::Array(vec![V::Bulk(id.to_string().into_bytes()), fields])
                })
                .collect(),
        )
    }

    proptest! {
        /// A whole value ends exactly where it ends; every proper prefix is incomplete.
        #[test]
        fn frames_end_where_they_end(v in any_value(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = Vec::new();
            encode_value(&v, &mut bytes);
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(frame_end(&bytes), Ok(len));
            for cut in 0..len {
                prop_assert_eq!(frame_end(&bytes[..cut]), Err(ParseError::Incomplete), "cut at {}", cut);
            }
        }

        /// Checked piece by piece as the bytes arrive, a value ends where it ends.
        #[test]
        fn completeness_resumes_across_pieces(v in any_value(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let mut bytes = Vec::new();
            encode_value(&v, &mut bytes);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
            cuts.sort_unstable();
            let mut progress = Progress::default();
            for cut in cuts {
                match progress.advance(&bytes[..cut]) {
                    Err(ParseError::Incomplete) => {}
                    other => prop_assert!(false, "a prefix of {} bytes gave {:?}", cut, other),
                }
            }
            prop_assert_eq!(progress.advance(&bytes), Ok(()));
            prop_assert_eq!(progress.pos, bytes.len());
        }

        /// Bytes that are not RESP are an error or incomplete, never a panic.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = frame_end(&bytes);
            let _ = scan_range(&bytes, &mut |_| {});
            let _ = job_record(&bytes);
        }

        /// Entries come out as redis-rs's own parser and the generic walker see them.
        #[test]
        fn ranges_read_as_the_generic_path_reads_them((entries, maps) in any_range()) {
            let mut bytes = Vec::new();
            encode_value(&range_value(&entries, maps), &mut bytes);
            let mut ours = Vec::new();
            let scanned = scan_range(&bytes, &mut |e| ours.push((e.id, e.ts.to_vec(), e.source.to_vec(), e.text.to_vec(), e.phase.to_vec()))).unwrap();
            let value = redis::parse_redis_value(&bytes).unwrap();
            let mut theirs = Vec::new();
            let generic = super::super::redis::scan_reply(&value, &mut |e| theirs.push((e.id, e.ts.to_vec(), e.source.to_vec(), e.text.to_vec(), e.phase.to_vec()))).unwrap();
            prop_assert_eq!(scanned, generic);
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn nil_error_and_other_shapes() {
        let scan = |bytes: &[u8]| scan_range(bytes, &mut |_| {});
        assert_eq!(scan(b"*-1\r\n").unwrap().entries, 0);
        assert_eq!(scan(b"_\r\n").unwrap().entries, 0);
        assert_eq!(scan(b"*0\r\n").unwrap().entries, 0);
        assert!(matches!(
            scan(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
            Err(StoreError::WrongType)
        ));
        assert!(matches!(scan(b"-ERR boom\r\n"), Err(StoreError::Other(_))));
        assert!(matches!(
            scan(b"!5\r\nERR x\r\n"),
            Err(StoreError::Other(_))
        ));
        assert!(matches!(scan(b":1\r\n"), Err(StoreError::Other(_))));
        assert!(matches!(
            scan(b"*1\r\n$3\r\nabc\r\n"),
            Err(StoreError::Other(_))
        ));
        // An entry with nil fields (deleted ones can read so) has empty fields.
        let mut ids = Vec::new();
        let scanned = scan_range(b"*1\r\n*2\r\n$3\r\n5-1\r\n*-1\r\n", &mut |e| {
            ids.push((e.id, e.text.len()))
        })
        .unwrap();
        assert_eq!((scanned.entries, ids), (1, vec![(StreamId::new(5, 1), 0)]));
        // An attribute before the reply is skipped.
        let scanned = scan_range(
            b"|1\r\n+key\r\n+value\r\n*1\r\n*2\r\n$3\r\n5-1\r\n*2\r\n$4\r\ntext\r\n$2\r\nhi\r\n",
            &mut |e| assert_eq!(e.text, b"hi"),
        )
        .unwrap();
        assert_eq!(scanned.entries, 1);
    }

    #[test]
    fn records() {
        let job = job_record(b"*2\r\n$6\r\nuser_a\r\n$5\r\nready\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (job.user_id.as_str(), job.status.is_terminal()),
            ("user_a", true)
        );
        assert_eq!(job_record(b"*2\r\n$-1\r\n$-1\r\n").unwrap(), None);
        assert_eq!(
            job_record(b"*2\r\n$2\r\n\xff\xfe\r\n$4\r\ncode\r\n").unwrap(),
            None,
            "not UTF-8: owns nothing"
        );
        assert_eq!(job_record(b"-WRONGTYPE x\r\n").unwrap(), None);
        assert!(job_record(b"-ERR x\r\n").is_err());
        let odd = job_record(b"*2\r\n$1\r\nu\r\n$6\r\nready\xff\r\n")
            .unwrap()
            .unwrap();
        assert!(!odd.status.is_terminal());
    }

    #[test]
    fn commands_encode_as_resp() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XRANGE", b"job:a:logs", b"(1-0", b"+"]);
        assert_eq!(
            out,
            b"*4\r\n$6\r\nXRANGE\r\n$10\r\njob:a:logs\r\n$4\r\n(1-0\r\n$1\r\n+\r\n"
        );
    }
}
