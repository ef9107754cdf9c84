//! The lean path against hyper, on random and mutated messages: for a request head, the
//! lean path either hands it to the full proxy (hyper) or frames it exactly as hyper's
//! server does — same method, target, Host and body length, the next pipelined request
//! starting where hyper's does; for an instance's response, it either refuses it (502) or
//! delimits its body exactly as hyper's client does. A message two parsers read apart is
//! how requests are smuggled and responses desynchronised.

use berth_edge::chunked::ChunkedEnd;
use berth_edge::fast::{self, Framing, RequestHead, ResponseHead};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long hyper gets for one message (they are tiny and in memory).
const LIMIT: Duration = Duration::from_secs(2);

/// A request as a parser framed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    hosts: Vec<Vec<u8>>,
    /// `None`: its body could not be read.
    body: Option<usize>,
}

/// What hyper's HTTP/1.1 server reads from `input` (then the end of the stream): each
/// request it handed to its service, in order.
async fn hyper_requests(input: Vec<u8>) -> Vec<Seen> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let record = seen.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let method = req.method().to_string();
            let target = req.uri().to_string();
            let hosts = req
                .headers()
                .get_all(hyper::header::HOST)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes().len());
            if let Ok(mut seen) = record.lock() {
                seen.push(Seen {
                    method,
                    target,
                    hosts,
                    body,
                });
            }
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(server), service);
    let feed = async move {
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        // Hyper's answers are read (and dropped) so that it never waits for room.
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    };
    let _ = tokio::time::timeout(LIMIT, async { tokio::join!(conn, feed) }).await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    seen
}

/// Why the lean path stopped reading a connection's input.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// It handed the rest over to the full proxy (hyper).
    HandOver,
    /// It waits for more of a head.
    Partial,
    /// The client asked to close after the last request.
    Closed,
}

/// What the lean path forwards from `input`, and where and why it stopped.
fn lean_requests(input: &[u8]) -> (Vec<Seen>, usize, Stop) {
    let mut seen = Vec::new();
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        match fast::read_request(&input[at..], &mut headers) {
            RequestHead::Forward(req) => {
                seen.push(Seen {
                    method: req.method.to_string(),
                    target: req.target.to_string(),
                    hosts: vec![req.host.to_vec()],
                    body: Some(0),
                });
                at += req.head_len;
                if req.client_close {
                    return (seen, at, Stop::Closed);
                }
            }
            RequestHead::HandOver => return (seen, at, Stop::HandOver),
            RequestHead::Partial => return (seen, at, Stop::Partial),
        }
    }
}

const METHODS: &[&str] = &["GET", "GET", "GET", "HEAD", "POST", "get", "OPTIONS"];
const TARGETS: &[&str] = &[
    "/",
    "/p?q=1",
    "/a/b%20c",
    "//double",
    "http://a.test/",
    "http://b.test/x",
    "*",
    "a.test:80",
    "/a#frag",
    "/\"q\"",
    "/{x}",
    "/?q=<c>",
    "/?q=`x`",
    "/caf\u{e9}",
    "/a|b~c!$&'()*+,;=:@",
];
const VERSIONS: &[&str] = &[
    "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1",
];
const SPACES: &[&str] = &[" ", " ", " ", " ", "  ", "\t"];
const EOLS: &[&str] = &["\r\n", "\r\n", "\r\n", "\r\n", "\n"];
const REQUEST_HEADERS: &[&str] = &[
    "Host: a.test",
    "Host: a.test",
    "Host: a.test",
    "Host: A.test:8080",
    "Host: b.test",
    "Host: a.test:abc",
    "Host: a.test:",
    "Host: ",
    "Host: [::1]:80",
    "Host:a.test",
    "Host : a.test",
    "Host:\ta.test\t",
    "Host: a.test, b.test",
    "Host: \u{ff}a.test",
    "Content-Length: 0",
    "Content-Length: 5",
    "Content-Length: +0",
    "Content-Length: 0, 0",
    "Content-Length: 00",
    "Content-Length: -0",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, gzip",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: Close, keep-alive",
    "Connection: x-hop",
    "Connection: host",
    "Expect: 100-continue",
    "Upgrade: websocket",
    "X-Forwarded-For: 6.6.6.6",
    "X-Folded: a\r\n folded",
    " X-Leading: space",
    "X-Empty:",
    "X-Tab:\tv",
    "Cookie: a=b",
];
/// Fields that leave a request for the lean path.
const BENIGN_HEADERS: &[&str] = &[
    "Accept: */*",
    "Cookie: a=b",
    "User-Agent: t/1",
    "Connection: keep-alive",
    "Connection: close",
    "X-Forwarded-For: 6.6.6.6",
    "Content-Length: 0",
];
const REQUEST_BODIES: &[&str] = &[
    "",
    "",
    "hello",
    "0\r\n\r\n",
    "5\r\nhello\r\n0\r\n\r\n",
    "\r\n",
];

/// Mostly `usual`, sometimes any of `odd` (a test of only odd messages would see the lean
/// path hand everything over).
fn mostly(
    usual: &'static str,
    odd: &'static [&'static str],
) -> impl Strategy<Value = &'static str> + Clone {
    prop_oneof![6 => Just(usual), 1 => select(odd)]
}

/// A request head from the pieces above: its line, a Host, some fields, an end, maybe a
/// body.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        mostly("GET", METHODS),
        mostly("/p?q=1", TARGETS),
        mostly("HTTP/1.1", VERSIONS),
        mostly(" ", SPACES),
        prop::option::weighted(
            0.85,
            (any::<Index>(), mostly("Host: a.test", REQUEST_HEADERS)),
        ),
        prop::collection::vec(
            (
                prop_oneof![2 => select(BENIGN_HEADERS), 1 => select(REQUEST_HEADERS)],
                mostly("\r\n", EOLS),
            ),
            0..4,
        ),
        mostly("\r\n", EOLS),
        mostly("\r\n", EOLS),
        mostly("", REQUEST_BODIES),
    )
        .prop_map(|(m, t, v, sp, host, mut fields, eol, end, body)| {
            let mut out = format!("{m}{sp}{t}{sp}{v}{eol}");
            if let Some((at, host)) = host {
                let at = at.index(fields.len() + 1);
                fields.insert(at, (host, "\r\n"));
            }
            for (f, e) in fields {
                out.push_str(f);
                out.push_str(e);
            }
            out.push_str(end);
            out.push_str(body);
            // (`\u{ff}` and `é` stand for bytes past ASCII; as UTF-8 they are two.)
            out.into_bytes()
        })
}

/// Byte-level changes: a byte dropped, replaced or added, or a line duplicated.
fn mutate(mut bytes: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for (at, op, b) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at.index(bytes.len());
        match op % 4 {
            0 => {
                bytes.remove(i);
            }
            1 => bytes[i] = *b,
            2 => bytes.insert(i, *b),
            _ => {
                let start = bytes[..i]
                    .iter()
                    .rposition(|c| *c == b'\n')
                    .map_or(0, |p| p + 1);
                let end = bytes[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(start..start, line);
            }
        }
    }
    bytes
}

/// No edit half of the time, else one or two.
fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec(
            (
                any::<Index>(),
                any::<u8>(),
                select(&b" \t\r\n:,\0\xffa0"[..]),
            ),
            1..3,
        ),
    ]
}

/// One or two requests (pipelined), maybe mutated.
fn requests() -> impl Strategy<Value = Vec<u8>> {
    (request(), prop::option::of(request()), edits()).prop_map(|(first, second, edits)| {
        let mut bytes = first;
        if let Some(second) = second {
            bytes.extend_from_slice(&second);
        }
        mutate(bytes, &edits)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn the_lean_path_frames_requests_as_hyper_does_or_hands_them_over(input in requests()) {
        let rt = runtime();
        let (lean, at, stop) = lean_requests(&input);
        let whole = rt.block_on(hyper_requests(input.clone()));
        let mut expected = lean.clone();
        if stop != Stop::Closed {
            // The full proxy reads the rest, from where the lean path stopped.
            expected.extend(rt.block_on(hyper_requests(input[at..].to_vec())));
        }
        prop_assert_eq!(
            &whole,
            &expected,
            "input {:?}: lean path forwarded {:?} then {:?}",
            String::from_utf8_lossy(&input),
            lean,
            stop
        );
    }
}

/// What hyper's HTTP/1.1 client makes of `bytes` (then the end of the stream) as the
/// response to a `method` request: status and body, or `None` when it fails.
async fn hyper_response(bytes: Vec<u8>, method: hyper::Method) -> Option<(u16, Vec<u8>)> {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let exchange = async move {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri("/")
            .header(hyper::header::HOST, "a.test")
            .body(Empty::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, body.to_vec()))
    };
    let feed = async move {
        // The request first: bytes that come while no request is under way are an error
        // to hyper's client.
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match server.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = server.write_all(&bytes).await;
        let _ = server.shutdown().await;
        let mut sink = Vec::new();
        let _ = server.read_to_end(&mut sink).await;
    };
    let (got, _) = tokio::time::timeout(LIMIT, async { tokio::join!(exchange, feed) })
        .await
        .ok()?;
    got
}

/// What the lean path does with an instance's bytes (then the end of the stream).
#[derive(Debug)]
enum Lean {
    /// A 502 (or, mid-body, a cut connection): nothing to compare.
    Refused,
    /// It relays the head and this body, which ends `end` bytes into the input.
    Relayed {
        status: u16,
        framing: Framing,
        /// The body as the client's decoder reads it (chunks decoded).
        body: Vec<u8>,
        end: usize,
    },
    /// It relays the head, then the instance's stream ends before the body does.
    Cut,
}

fn lean_response(bytes: &[u8], head_request: bool) -> Lean {
    let mut read = bytes.to_vec();
    let head_len = match fast::skip_informational(&mut read) {
        ResponseHead::Final(n) => n,
        ResponseHead::Partial | ResponseHead::Garbled => return Lean::Refused,
    };
    // Where `read` starts in the input (informational responses dropped).
    let skipped = bytes.len() - read.len();
    let mut head = Vec::new();
    let Ok(resp) = fast::frame_response(&read[..head_len], head_request, &mut head) else {
        return Lean::Refused;
    };
    let body = &read[head_len..];
    let at = skipped + head_len;
    match resp.framing {
        Framing::Length(n) if (body.len() as u64) < n => Lean::Cut,
        Framing::Length(n) => Lean::Relayed {
            status: resp.status,
            framing: resp.framing,
            body: body[..n as usize].to_vec(),
            end: at + n as usize,
        },
        Framing::Chunked => match ChunkedEnd::default().feed(body) {
            Ok(Some(end)) => Lean::Relayed {
                status: resp.status,
                framing: resp.framing,
                body: dechunk(&body[..end]),
                end: at + end,
            },
            Ok(None) => Lean::Cut,
            Err(_) => Lean::Refused,
        },
        Framing::UntilClose => Lean::Relayed {
            status: resp.status,
            framing: resp.framing,
            body: body.to_vec(),
            end: bytes.len(),
        },
    }
}

/// The data of a chunked body [`ChunkedEnd`] found whole.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = std::str::from_utf8(&body[..digits])
            .ok()
            .and_then(|d| usize::from_str_radix(d, 16).ok())
            .unwrap_or(0);
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return data;
        };
        body = &body[line_end + 2..];
        if size == 0 {
            return data;
        }
        data.extend_from_slice(&body[..size.min(body.len())]);
        body = &body[(size + 2).min(body.len())..];
    }
}

const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.0 200 OK",
    "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified",
    "HTTP/1.1 404 ",
    "HTTP/1.1 200",
    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK",
    "HTTP/1.1 101 Switching Protocols",
    "HTTP/1.1 099 Odd",
];
/// Response fields; `{n}` is the body's real length.
const RESPONSE_HEADERS: &[&str] = &[
    "Content-Length: {n}",
    "Content-Length: {n}",
    "Content-Length: {n}",
    "Content-Length: 2",
    "Content-Length: 99",
    "Content-Length: +{n}",
    "Content-Length: {n}, {n}",
    "Content-Length: 0{n}",
    "Content-Length:  {n} ",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding:  chunked ",
    "Transfer-Encoding: \u{e9}, chunked",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: content-length",
    "Connection: transfer-encoding",
    "Connection: x-hop",
    "X-Hop: 1",
    "Trailer: x-t",
];
const RESPONSE_BODIES: &[&str] = &[
    "",
    "hello world",
    "5\r\nhello\r\n0\r\n\r\n",
    "5;ext=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
    "5 \r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "5 x\r\nhello\r\n0\r\n\r\n",
    "0005\r\nhello\r\n0\r\n\r\n",
    "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    "5\r\nhello\r\n0\r\nx: a\nb\r\n\r\n",
    "5\nhello\r\n0\r\n\r\n",
    "5\r\nhelloXX0\r\n\r\n",
    "5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nEND",
];

/// An instance's response (maybe with what follows it), maybe mutated; and whether it
/// answers a HEAD request.
fn responses() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        mostly("HTTP/1.1 200 OK", STATUS_LINES),
        prop::collection::vec((select(RESPONSE_HEADERS), mostly("\r\n", EOLS)), 0..4),
        mostly("\r\n", EOLS),
        select(RESPONSE_BODIES),
        any::<bool>(),
        edits(),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(status, fields, end, body, more, edits, head)| {
            let mut out = format!("{status}\r\n");
            for (f, e) in fields {
                out.push_str(&f.replace("{n}", &body.len().to_string()));
                out.push_str(e);
            }
            out.push_str(end);
            out.push_str(body);
            if more {
                out.push_str("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nEND");
            }
            (mutate(out.into_bytes(), &edits), head)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn the_lean_path_delimits_responses_as_hyper_does_or_refuses_them(
        (input, head_request) in responses()
    ) {
        let rt = runtime();
        let method = if head_request { hyper::Method::HEAD } else { hyper::Method::GET };
        let lean = lean_response(&input, head_request);
        let shown = String::from_utf8_lossy(&input).to_string();
        match lean {
            Lean::Refused => {}
            Lean::Cut => {
                let whole = rt.block_on(hyper_response(input.clone(), method));
                prop_assert!(whole.is_none(), "{shown:?}: hyper read {whole:?}, the lean path a cut body");
            }
            Lean::Relayed { status, framing, body, end } => {
                // Hyper reads the same response from the same bytes…
                let whole = rt.block_on(hyper_response(input.clone(), method.clone()));
                prop_assert_eq!(
                    whole.as_ref(),
                    Some(&(status, body.clone())),
                    "{:?}: lean {:?}", shown, framing
                );
                if framing != Framing::UntilClose {
                    // …and it ends where the lean path says: hyper needs every byte up to
                    // `end` and none after.
                    let upto = rt.block_on(hyper_response(input[..end].to_vec(), method.clone()));
                    prop_assert_eq!(upto, Some((status, body)), "{:?} up to {}", shown, end);
                    let short = rt.block_on(hyper_response(input[..end - 1].to_vec(), method));
                    prop_assert!(short.is_none(), "{:?}: hyper read {:?} from {} bytes", shown, short, end - 1);
                }
            }
        }
    }
}

/// The references themselves: a plain request and plain responses are read as they are.
#[test]
fn the_references_read_plain_messages() {
    let rt = runtime();
    let seen = rt.block_on(hyper_requests(
        b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
    ));
    let (lean, _, stop) = lean_requests(
        b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a.test\r\n\r\n",
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen, stop), (lean, Stop::Partial));
    for (input, body) in [
        (&b"HTTP/1.1 200 OK\r\n\r\nabc"[..], &b"abc"[..]),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef",
            b"abc",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"abc",
        ),
    ] {
        let got = rt.block_on(hyper_response(input.to_vec(), hyper::Method::GET));
        assert_eq!(
            got,
            Some((200, body.to_vec())),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(matches!(lean_response(input, false), Lean::Relayed { .. }));
    }
}
