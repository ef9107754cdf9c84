//! The edge's lean path for HTTP/1.1, plain or over TLS (once the handshake chose it). A
//! request without a body for an app's instance — most requests — is parsed once
//! (httparse), forwarded as bytes with the edge's `X-Forwarded-*` headers, and its response
//! relayed as it comes, on the connection's own task over a pooled connection to the
//! instance: what nginx and HAProxy do.
//!
//! Everything else is the full proxy's ([`crate::proxy::Proxy::handle`], on hyper): HTTP/2,
//! upgrades, request bodies, HTTP/1.0, redirects, sleeping apps, error pages, and a request
//! whose instance could not be reached or did not answer before its response began. The full
//! proxy then serves the rest of the connection, starting with the bytes already read, so
//! nothing a client sent is lost and every rule of the full proxy holds.

use crate::chunked::ChunkedEnd;
use crate::policy;
use crate::proxy::{Proxy, Scheme};
use crate::routes::{Group, LiveRoute};
use crate::splice::{SpliceEnd, Spliced};
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Most header fields in a request or response head on this path (as many as the full proxy
/// takes; a request with more goes to it).
const MAX_HEADERS: usize = 100;
/// Most idle connections kept per instance and worker.
const MAX_IDLE: usize = 256;
/// Longest wait for a TCP connection to an instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the buffer a response body passes through.
const RELAY_BUFFER: usize = 64 * 1024;
/// Most bytes read from an instance at a time until its response head is in.
const HEAD_READ: u64 = 16 * 1024;

/// A connection to an instance the lean path can pool: a tokio socket, or one on the
/// worker's io_uring ([`crate::uring::UringStream`]).
pub trait Upstream: AsyncRead + AsyncWrite + SpliceEnd + Unpin + Sized {
    /// Connects to `addr`, with `TCP_NODELAY` (requests go out whole, at once).
    fn open(addr: SocketAddr) -> impl std::future::Future<Output = std::io::Result<Self>>;
    /// Whether an idle connection is still open (nothing arrived on it, not even its end).
    fn still_open(&self) -> bool;
}

impl Upstream for TcpStream {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        Ok(conn)
    }

    fn still_open(&self) -> bool {
        matches!(self.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

impl Upstream for crate::uring::UringStream {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        Self::connect(addr).await
    }

    fn still_open(&self) -> bool {
        crate::uring::UringStream::still_open(self)
    }
}

/// Idle connections to instances, by address (one pool per edge worker; a worker talks to
/// few instances, so a list is searched).
pub struct RawPool<C = TcpStream> {
    idle: Mutex<Vec<(SocketAddr, Vec<C>)>>,
    returns: AtomicUsize,
}

impl<C> Default for RawPool<C> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            returns: AtomicUsize::new(0),
        }
    }
}

impl<C: Upstream> RawPool<C> {
    /// An idle connection to `addr` that is still open and brought nothing since its last
    /// response: bytes an instance sent after a response (past a body-less one's end, say)
    /// would be read as the next request's response.
    fn take(&self, addr: SocketAddr) -> Option<C> {
        let mut idle = self.idle.lock().ok()?;
        let list = &mut idle.iter_mut().find(|(a, _)| *a == addr)?.1;
        while let Some(conn) = list.pop() {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, conn: C) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        // Now and then, forget connections their instance closed (it went away).
        if self
            .returns
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(4096)
        {
            idle.retain_mut(|(_, list)| {
                list.retain(C::still_open);
                !list.is_empty()
            });
        }
        match idle.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, list)) if list.len() < MAX_IDLE => list.push(conn),
            Some(_) => {}
            None => idle.push((addr, vec![conn])),
        }
    }
}

/// How a connection left this path.
pub enum Outcome<S> {
    /// It is over (the client closed it, timed out or broke off).
    Closed,
    /// Its last response was sent and it is to be closed (the client asked to, the response
    /// ran until the instance closed, or the edge stops): over TLS, say so (`close_notify`).
    Answered(S),
    /// The full proxy serves the rest of it, starting with `read` (bytes already read).
    HandOver(S, Vec<u8>),
    /// Its first response was sent, it stays open and nothing of a next request is in (only
    /// when asked for, with `idle_after_first`): the caller serves the rest.
    Idle(S),
}

/// A request this path forwards.
struct Plan {
    /// Length of the request head in the buffer.
    head_len: usize,
    /// Where the Host header's value is in the buffer.
    host: std::ops::Range<usize>,
    route: Arc<LiveRoute>,
    canary: bool,
    head_request: bool,
    client_close: bool,
    /// Method and target, for the access log.
    logged: Option<(String, String)>,
}

enum Parsed {
    /// More bytes needed.
    Partial,
    /// For the full proxy.
    HandOver,
    Forward(Plan),
}

/// Serves an HTTP/1.1 connection (plain, or TLS after its handshake) while its requests
/// suit this path, over connections to instances from `pool`; with `idle_after_first`,
/// until its first response (see [`Outcome::Idle`]).
pub async fn serve<S: AsyncRead + AsyncWrite + SpliceEnd + Unpin, C: Upstream>(
    mut client: S,
    remote: SocketAddr,
    proxy: &Proxy,
    stop: &CancellationToken,
    scheme: Scheme,
    pool: &RawPool<C>,
    idle_after_first: bool,
) -> Outcome<S> {
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let mut relay: Vec<u8> = Vec::new();
    loop {
        // The next request's head.
        let mut deadline = hyper::rt::Timer::sleep_until(
            &crate::coarse_timer::CoarseTimer,
            Instant::now() + crate::server::HEADER_READ_TIMEOUT,
        );
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut seen = 0;
        let plan = loop {
            if !input.is_empty() {
                if head_complete(&input, &mut seen) {
                    match plan(&input, proxy, remote.ip(), scheme, &mut head) {
                        Parsed::Forward(plan) => break plan,
                        Parsed::HandOver => return Outcome::HandOver(client, input),
                        Parsed::Partial => {}
                    }
                }
                if input.len() > crate::server::MAX_HEADER_BYTES {
                    return Outcome::HandOver(client, input);
                }
            }
            if input.capacity() - input.len() < 1024 {
                input.reserve(4096);
            }
            let stopping = stop.is_cancelled();
            if stopping && grace.is_none() {
                grace = Some(Box::pin(tokio::time::sleep(
                    crate::server::LAST_REQUEST_GRACE,
                )));
            }
            let read = tokio::select! {
                r = client.read_buf(&mut input) => r,
                _ = &mut deadline => return Outcome::Closed,
                // Stopping: a connection gets a moment to bring the request it may be
                // sending, then closes.
                _ = stop.cancelled(), if !stopping => continue,
                _ = async {
                    match grace.as_mut() {
                        Some(g) => g.await,
                        None => std::future::pending().await,
                    }
                } => return Outcome::Closed,
            };
            match read {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        };
        let stopping = stop.is_cancelled();
        let host = std::str::from_utf8(&input[plan.host.clone()]).unwrap_or_default();
        match forward(
            &mut client,
            remote,
            proxy,
            pool,
            &plan,
            host,
            &mut head,
            &mut relay,
            stopping,
        )
        .await
        {
            Relayed::Done { keep_alive } => {
                input.drain(..plan.head_len);
                if !keep_alive || plan.client_close || stopping {
                    return Outcome::Answered(client);
                }
                if idle_after_first && input.is_empty() {
                    return Outcome::Idle(client);
                }
            }
            Relayed::Broken => return Outcome::Closed,
            Relayed::NotSent => return Outcome::HandOver(client, input),
        }
    }
}

/// Whether `input` holds a whole request head (it ends at an empty line), looking only at
/// the bytes that came since the last look (`seen`): a head that arrives in many pieces is
/// scanned once, not parsed again from its start at each piece.
fn head_complete(input: &[u8], seen: &mut usize) -> bool {
    // A line end that began in the previous piece.
    let from = seen.saturating_sub(2).min(input.len());
    *seen = input.len();
    memchr::memchr_iter(b'\n', &input[from..]).any(|i| {
        let rest = &input[from + i + 1..];
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

/// A request head this path may forward, as [`read_request`] read it.
pub struct LeanRequest<'h, 'b> {
    /// `GET` or `HEAD`.
    pub method: &'b str,
    /// The origin-form target, as it came.
    pub target: &'b str,
    /// The value of its one Host header (valid, see [`policy::valid_host`]).
    pub host: &'b [u8],
    /// Length of the head: the next pipelined request starts there (it has no body).
    pub head_len: usize,
    /// Whether the client asked to close the connection after it.
    pub client_close: bool,
    /// Its header fields.
    pub headers: &'h [httparse::Header<'b>],
}

/// What the lean path makes of the bytes at the start of a connection's input.
pub enum RequestHead<'h, 'b> {
    /// More bytes are needed.
    Partial,
    /// Not for this path: the full proxy (hyper) reads it, and answers it if it is bad.
    HandOver,
    /// A request without a body this path frames exactly as hyper would.
    Forward(LeanRequest<'h, 'b>),
}

/// Bytes of a request target this path takes: visible ASCII that hyper's URI parser keeps
/// as it is in both path and query (not `"`, `#`, `<`, `>`, `` ` ``, `{`, `}`, nor any
/// byte past ASCII). A target with any other goes to the full proxy, so that what an
/// instance sees never depends on the path the request took.
static TARGET_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = !matches!(b as u8, b'"' | b'#' | b'<' | b'>' | b'`' | b'{' | b'}');
        b += 1;
    }
    t
};

/// Longest target hyper's URI parser takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Reads the request head at the start of `input` (no I/O, no routing): whether this path
/// may forward it, and if so how it is framed. It forwards only what hyper frames the same
/// way — a `GET` or `HEAD` over HTTP/1.1 with one valid Host, no body, no upgrade or
/// expectation, an origin-form target — and hands over everything else, bad requests
/// included, so that the full proxy's answer (a 400 from one place) holds.
pub fn read_request<'h, 'b>(
    input: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
) -> RequestHead<'h, 'b> {
    if input.starts_with(b"PRI ") {
        return RequestHead::HandOver;
    }
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(input) {
        // Over the limit: the full proxy refuses it (431).
        Ok(httparse::Status::Complete(n)) if n > crate::server::MAX_HEADER_BYTES => {
            return RequestHead::HandOver
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return RequestHead::Partial,
        Err(_) => return RequestHead::HandOver,
    };
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = req;
    let (Some(method), Some(target), Some(1)) = (method, path, version) else {
        return RequestHead::HandOver;
    };
    if !(method == "GET" || method == "HEAD")
        || !target.starts_with('/')
        || target.len() > MAX_TARGET
        || !target.bytes().all(|b| TARGET_BYTES[usize::from(b)])
    {
        return RequestHead::HandOver;
    }
    // Host fields are counted whatever their bytes: a second one, even after one that is
    // not UTF-8, is a request the full proxy refuses.
    let mut hosts = 0;
    let mut host: &[u8] = b"";
    let mut lengths = 0;
    let mut client_close = false;
    for h in headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = h.value;
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if lengths > 1 || policy::parse_content_length(h.value) != Some(0) {
                return RequestHead::HandOver;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return RequestHead::HandOver;
        } else if name.eq_ignore_ascii_case("connection") {
            // Only `close` and `keep-alive` here (a header named in it: the full proxy).
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    client_close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return RequestHead::HandOver;
                }
            }
        }
    }
    if hosts != 1 || !policy::valid_host(host) {
        return RequestHead::HandOver;
    }
    RequestHead::Forward(LeanRequest {
        method,
        target,
        host,
        head_len,
        client_close,
        headers,
    })
}

/// Parses the request at the start of `input` and decides whether this path forwards it;
/// if so, writes the head to send to the instance into `out`.
fn plan(
    input: &[u8],
    proxy: &Proxy,
    client_ip: IpAddr,
    scheme: Scheme,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match read_request(input, &mut headers) {
        RequestHead::Forward(req) => req,
        RequestHead::Partial => return Parsed::Partial,
        RequestHead::HandOver => return Parsed::HandOver,
    };
    if req.target.starts_with(crate::proxy::ACME_CHALLENGE_PREFIX) {
        return Parsed::HandOver;
    }
    // A valid Host is ASCII.
    let Ok(host) = std::str::from_utf8(req.host) else {
        return Parsed::HandOver;
    };
    let Some(route) = proxy.table.load().lookup(host) else {
        return Parsed::HandOver;
    };
    let redirected =
        scheme == Scheme::Http && route.route.https_redirect && proxy.https_port.is_some();
    if route.stable.is_empty() || redirected {
        return Parsed::HandOver;
    }
    let group = route.choose(client_ip);
    let canary = !std::ptr::eq(group, &route.stable);

    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers {
        if policy::is_hop_by_hop(h.name.as_bytes()) || policy::is_forwarding(h.name.as_bytes()) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    // The client's forwarding headers are replaced (a trusted proxy's extended).
    policy::Forwarding {
        peer: client_ip,
        trusted: proxy.trusted.contains(client_ip),
        host: req.host,
        scheme,
        port: proxy.port(scheme),
    }
    .write_lines(
        req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
        out,
    );
    out.extend_from_slice(b"\r\n");
    let logged = proxy
        .access
        .as_ref()
        .map(|_| (req.method.to_string(), req.target.to_string()));
    let host_at = host.as_ptr() as usize - input.as_ptr() as usize;
    Parsed::Forward(Plan {
        head_len: req.head_len,
        host: host_at..host_at + host.len(),
        route,
        canary,
        head_request: req.method == "HEAD",
        client_close: req.client_close,
        logged,
    })
}

enum Relayed {
    /// The response went to the client in full; whether the connection may carry another.
    Done { keep_alive: bool },
    /// The client or the instance broke off mid-response: the connection is over.
    Broken,
    /// No response came: the full proxy takes the request over.
    NotSent,
}

/// How an instance's response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (none for a body-less response: HEAD, 204, 304).
    Length(u64),
    /// Chunked, followed by [`ChunkedEnd`].
    Chunked,
    /// Until the instance closes the connection.
    UntilClose,
}

/// An instance's response head as this path relays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeanResponse {
    /// Its status code.
    pub status: u16,
    /// How its body is delimited.
    pub framing: Framing,
    /// The instance closes the connection after it (`Connection: close`, HTTP/1.0).
    pub upstream_close: bool,
    /// It declared both a transfer coding and a length: the body is relayed in its
    /// transfer coding (RFC 9112 §6.3), but no byte after it is trusted — the client's
    /// connection closes after it and the instance's is not reused.
    pub ambiguous: bool,
}

/// Why a response head from an instance is not relayed (the client gets a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    /// Not a whole HTTP/1.x response head.
    #[error("the response head does not parse")]
    Unparsable,
    /// A status code below 100, or an informational one where a final one belongs.
    #[error("the response status is not a final status code")]
    Status,
    /// A Content-Length that is not plain digits, or more than one.
    #[error("the response's Content-Length is malformed or repeated")]
    Length,
    /// A Transfer-Encoding that is not visible ASCII, or one in an HTTP/1.0 response.
    #[error("the response's Transfer-Encoding is malformed")]
    TransferEncoding,
}

/// Reads an instance's final response head (`head`, a whole head and nothing more) and
/// writes the head to send to the client into `out`: status line and end-to-end headers,
/// without the final empty line (the caller adds `connection: close` first if it closes).
/// The framing is hyper's client's (RFC 9112 §6.3); what hyper would accept in more than
/// one way — a signed or padded length, two lengths — is refused.
pub fn frame_response(
    head: &[u8],
    head_request: bool,
    out: &mut Vec<u8>,
) -> Result<LeanResponse, BadResponse> {
    use std::io::Write as _;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    if !matches!(resp.parse(head), Ok(httparse::Status::Complete(_))) {
        return Err(BadResponse::Unparsable);
    }
    let status = resp.code.unwrap_or(0);
    if status < 200 {
        return Err(BadResponse::Status);
    }
    // An HTTP/1.0 instance closes after each response unless it says otherwise: assumed.
    let http10 = resp.version == Some(0);
    let mut upstream_close = http10;
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked = false;
    // Headers named in Connection are for this hop only.
    let mut named: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if http10
                || !h
                    .value
                    .iter()
                    .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
            {
                return Err(BadResponse::TransferEncoding);
            }
            coded = true;
            // The last coding of the last field decides (as hyper reads it).
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match (policy::parse_content_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                _ => return Err(BadResponse::Length),
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    upstream_close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive")
                    && !token.is_empty()
                    && policy::connection_may_remove(token)
                {
                    named.push(token);
                }
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Length(0)
    } else if coded && chunked {
        Framing::Chunked
    } else if coded {
        // A transfer coding that does not end in chunked: the body runs until the close.
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{status}");
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if h.name.eq_ignore_ascii_case("connection")
            || named.iter().any(|n| n.eq_ignore_ascii_case(name))
            // With a transfer coding the length goes: the coding delimits the body.
            || (coded && h.name.eq_ignore_ascii_case("content-length"))
            // (The body is passed on in its own framing: its transfer coding stays.)
            || (policy::is_hop_by_hop(name) && !h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(LeanResponse {
        status,
        framing,
        upstream_close,
        ambiguous: coded && length.is_some(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn forward<S: AsyncWrite + SpliceEnd + Unpin, C: Upstream>(
    client: &mut S,
    remote: SocketAddr,
    proxy: &Proxy,
    pool: &RawPool<C>,
    plan: &Plan,
    host: &str,
    head: &mut Vec<u8>,
    relay: &mut Vec<u8>,
    stopping: bool,
) -> Relayed {
    let group: &Group = match (&plan.route.canary, plan.canary) {
        (Some((g, _, _)), true) => g,
        _ => &plan.route.stable,
    };
    let Some((upstream, state)) = group.best() else {
        return Relayed::NotSent;
    };
    let answering = Answering {
        proxy,
        plan,
        group,
        remote,
        started: Instant::now(),
    };
    let _under_way = state.begin();
    // A pooled connection first; if it turns out closed before answering, a new one. As in
    // the full proxy, a request an instance may have seen (and perhaps crashed on) is not
    // handed to another instance of its release.
    let mut pooled = pool.take(upstream);
    let mut maybe_seen = false;
    let exchanged = loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => match connect(upstream).await {
                Some(c) => c,
                None if !maybe_seen => return Relayed::NotSent,
                None => {
                    state.failed();
                    break None;
                }
            },
        };
        relay.clear();
        match exchange(&mut conn, head, relay).await {
            Ok(n) => break Some((conn, n)),
            Err(Exchange::NothingBack) => {
                if !reused {
                    state.failed();
                }
                maybe_seen = true;
                if reused {
                    continue;
                }
                break None;
            }
            Err(Exchange::Garbled) => {
                state.failed();
                return bad_gateway(client, &answering).await;
            }
        }
    };
    let Some((mut conn, response_head_len)) = exchanged else {
        // Only another release's instances may get it now: the app may be being replaced.
        if settle(proxy, host, group.release).await {
            return Relayed::NotSent;
        }
        return bad_gateway(client, &answering).await;
    };

    // The response head, rewritten for the client.
    let Ok(response) = frame_response(&relay[..response_head_len], plan.head_request, head) else {
        state.failed();
        return bad_gateway(client, &answering).await;
    };
    let framing = response.framing;
    let client_keeps = !matches!(framing, Framing::UntilClose)
        && !response.ambiguous
        && !plan.client_close
        && !stopping;
    if !client_keeps {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");

    // What came with the head, checked before anything is sent: a malformed first chunk
    // is a 502, not a head followed by a cut body.
    let body_start = &relay[response_head_len..];
    let mut chunks = ChunkedEnd::default();
    let (first, mut done, mut reusable) = match framing {
        Framing::Length(n) => {
            let take = (n as usize).min(body_start.len());
            (take, take as u64 == n, body_start.len() as u64 <= n)
        }
        Framing::Chunked => match chunks.feed(body_start) {
            Ok(Some(end)) => (end, true, end == body_start.len()),
            Ok(None) => (body_start.len(), false, true),
            Err(_) => {
                state.failed();
                return bad_gateway(client, &answering).await;
            }
        },
        Framing::UntilClose => (body_start.len(), false, false),
    };

    // Counted at the response's head, as the full proxy counts.
    let status = response.status;
    answering.record(status);
    if matches!(status, 502..=504) {
        state.failed();
    } else {
        state.succeeded();
    }

    let mut left = match framing {
        Framing::Length(n) => n - first as u64,
        _ => 0,
    };
    let splicing = matches!(framing, Framing::Length(_))
        && left >= crate::splice::MIN_BODY
        && conn.splice_fd().is_some()
        && client.splice_fd().is_some();
    let parts = [IoSlice::new(head), IoSlice::new(&body_start[..first])];
    let written = match splicing.then(|| crate::splice::send_before(client, &parts)) {
        // Held back until the spliced body follows: the client is woken once, for both.
        Some(Some(sent)) => Ok(sent),
        _ => client.write_vectored(&parts).await,
    };
    let total = head.len() + first;
    match written {
        Ok(n) if n == total => {}
        Ok(n) => {
            // The rest of the head and first bytes.
            let mut rest = head.clone();
            rest.extend_from_slice(&body_start[..first]);
            if client.write_all(&rest[n..]).await.is_err() {
                return Relayed::Broken;
            }
        }
        Err(_) => return Relayed::Broken,
    }
    while !done {
        // A large body of known length passes inside the kernel, as far as it can.
        if splicing && left >= crate::splice::MIN_BODY {
            match crate::splice::relay(&mut conn, client, &mut left, relay).await {
                Spliced::Done => {
                    // Bytes past the body (an instance sending more than it said) were read
                    // with its last bytes: the connection is not for another request.
                    reusable = conn.splice_fd().is_some();
                    break;
                }
                Spliced::Broken => return Relayed::Broken,
                Spliced::Stopped => {}
            }
        }
        relay.clear();
        relay.reserve(RELAY_BUFFER);
        let n = match conn.read_buf(relay).await {
            Ok(0) | Err(_) => {
                // An instance that closes ends a close-delimited body (the client's
                // connection closes with it); any other body is cut.
                let _ = client.flush().await;
                return if matches!(framing, Framing::UntilClose) {
                    Relayed::Done { keep_alive: false }
                } else {
                    Relayed::Broken
                };
            }
            Ok(n) => n,
        };
        let pass = match framing {
            Framing::Length(_) => {
                let take = (left as usize).min(n);
                left -= take as u64;
                done = left == 0;
                reusable = take == n;
                take
            }
            Framing::Chunked => match chunks.feed(&relay[..n]) {
                Ok(Some(end)) => {
                    done = true;
                    reusable = end == n;
                    end
                }
                Ok(None) => n,
                Err(_) => return Relayed::Broken,
            },
            Framing::UntilClose => n,
        };
        if client.write_all(&relay[..pass]).await.is_err() {
            return Relayed::Broken;
        }
    }
    relay.clear();
    // Over TLS, what the last write left in the session goes out now.
    if client.flush().await.is_err() {
        return Relayed::Broken;
    }
    // Not reused after an ambiguous response, nor one with bytes past its end (a
    // body-less response's included): those bytes would answer the next request.
    if reusable
        && !response.upstream_close
        && !response.ambiguous
        && !matches!(framing, Framing::UntilClose)
    {
        pool.give_back(upstream, conn);
    } else {
        let _ = conn.shutdown().await;
    }
    Relayed::Done {
        keep_alive: client_keeps,
    }
}

/// What a response is counted and logged with.
struct Answering<'a> {
    proxy: &'a Proxy,
    plan: &'a Plan,
    group: &'a Group,
    remote: SocketAddr,
    started: Instant,
}

impl Answering<'_> {
    /// Counts the response (as the release's) and writes its access log line.
    fn record(&self, status: u16) {
        let elapsed = self.started.elapsed();
        self.group.series.record(status, elapsed);
        if let (Some(log), Some((method, path))) = (&self.proxy.access, &self.plan.logged) {
            log.record(
                &self.plan.route.route.app,
                self.group.release,
                method,
                path,
                status,
                elapsed,
                self.remote.ip(),
            );
        }
    }
}

/// Answers 502 (counted and logged as the release's) and ends the connection.
async fn bad_gateway<S: AsyncWrite + Unpin>(client: &mut S, answering: &Answering<'_>) -> Relayed {
    answering.record(502);
    let _ = client.write_all(&crate::pages::bad_gateway_http1()).await;
    let _ = client.flush().await;
    Relayed::Broken
}

/// Waits a moment (as [`Proxy`]'s settle does) for `host` to be served by another release
/// than `seen_by`; whether it is.
async fn settle(proxy: &Proxy, host: &str, seen_by: u32) -> bool {
    let started = Instant::now();
    for pause in crate::proxy::SETTLE_PAUSES_MS {
        if started.elapsed() >= crate::proxy::SETTLE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match proxy.table.load().lookup(host) {
            Some(route) if route.route.release != seen_by && !route.stable.is_empty() => {
                return true
            }
            Some(_) => {}
            None => return false,
        }
    }
    false
}

async fn connect<C: Upstream>(addr: SocketAddr) -> Option<C> {
    tokio::time::timeout(CONNECT_TIMEOUT, C::open(addr))
        .await
        .ok()?
        .ok()
}

enum Exchange {
    /// Not a byte came back (the connection was closed or broke): the request may go again.
    NothingBack,
    /// Something came back that is not an HTTP/1.1 response head.
    Garbled,
}

/// Sends the request head and reads the response head (informational 1xx responses are
/// skipped) into `into`; returns the head's length.
async fn exchange<C: Upstream>(
    conn: &mut C,
    request: &[u8],
    into: &mut Vec<u8>,
) -> Result<usize, Exchange> {
    if conn.write_all(request).await.is_err() {
        return Err(Exchange::NothingBack);
    }
    loop {
        if into.capacity() - into.len() < 1024 {
            into.reserve(8192);
        }
        // A head and a small body come in one read; the rest of a large body stays in the
        // socket, to be spliced.
        match (&mut *conn).take(HEAD_READ).read_buf(into).await {
            Ok(0) | Err(_) if into.is_empty() => return Err(Exchange::NothingBack),
            Ok(0) | Err(_) => return Err(Exchange::Garbled),
            Ok(_) => {}
        }
        match skip_informational(into) {
            ResponseHead::Final(n) => return Ok(n),
            ResponseHead::Partial => {}
            ResponseHead::Garbled => return Err(Exchange::Garbled),
        }
    }
}

/// Where an instance's response stands in the bytes read so far, see
/// [`skip_informational`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHead {
    /// The final response's head is not all in yet.
    Partial,
    /// The final response's head is the first this many bytes.
    Final(usize),
    /// Not an HTTP/1.1 response head, or a switch of protocols nobody asked for.
    Garbled,
}

/// Drops the informational (1xx) responses at the start of `read`, as hyper's client
/// does, and says whether the final response's head is in.
pub fn skip_informational(read: &mut Vec<u8>) -> ResponseHead {
    while !read.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(read) {
            Ok(httparse::Status::Complete(n)) => match resp.code {
                Some(101) => return ResponseHead::Garbled,
                Some(100..=199) => {
                    read.drain(..n);
                }
                _ => return ResponseHead::Final(n),
            },
            Ok(httparse::Status::Partial) if read.len() <= crate::server::MAX_HEADER_BYTES => {
                return ResponseHead::Partial
            }
            _ => return ResponseHead::Garbled,
        }
    }
    ResponseHead::Partial
}

/// A connection whose first bytes were read already: they are read again first.
pub struct Rewind<S> {
    read: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `read` in front of what it brings next.
    pub fn new(read: Vec<u8>, inner: S) -> Self {
        Self {
            read,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.read.len() {
            let n = (self.read.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.read[from..from + n]);
            self.pos += n;
            if self.pos == self.read.len() {
                self.read = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::head_complete;

    /// Fed piece by piece, as a slow client sends it.
    fn complete_after(head: &[u8], piece: usize) -> Option<usize> {
        let mut seen = 0;
        (1..=head.len().div_ceil(piece)).find_map(|n| {
            let upto = (n * piece).min(head.len());
            head_complete(&head[..upto], &mut seen).then_some(upto)
        })
    }

    #[test]
    fn a_head_is_complete_at_its_empty_line_however_it_arrives() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        ] {
            for piece in 1..=head.len() {
                assert_eq!(
                    complete_after(head, piece),
                    Some(head.len()),
                    "{head:?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_head_without_its_empty_line_is_not_complete() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n";
        for piece in 1..=head.len() {
            assert_eq!(complete_after(head, piece), None, "in pieces of {piece}");
        }
    }
}
