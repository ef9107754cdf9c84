//! Error pages the edge answers with. They say what happened in words a visitor understands
//! and never reveal internals (addresses, upstream errors).

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{header, Response, StatusCode};

/// Body type of edge responses.
pub type EdgeBody = BoxBody<Bytes, BoxError>;

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn page_html(status: StatusCode, title: &str, detail: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{code} {title}</h1><p>{detail}</p>\
         <hr><small>berth edge</small></body></html>\n",
        code = status.as_u16()
    )
}

fn page(status: StatusCode, title: &str, detail: &str) -> Response<EdgeBody> {
    let html = page_html(status, title, detail);
    let mut resp = Response::new(Full::new(Bytes::from(html)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert("x-berth-error", header::HeaderValue::from_static("edge"));
    resp
}

/// A plain-text 200 answer (ACME challenge responses).
pub fn text(body: &str) -> Response<EdgeBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// A permanent redirect that keeps the method (308), e.g. HTTP → HTTPS.
pub fn redirect(location: &str) -> Response<EdgeBody> {
    let mut resp = page(
        StatusCode::PERMANENT_REDIRECT,
        "Permanent Redirect",
        "This site is served over HTTPS.",
    );
    resp.headers_mut().remove("x-berth-error");
    if let Ok(v) = header::HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// 404: no app answers to this host name.
pub fn not_found(host: &str) -> Response<EdgeBody> {
    let host: String = escape(&host.chars().take(253).collect::<String>());
    page(
        StatusCode::NOT_FOUND,
        "No app here",
        &format!("No app is deployed at <b>{host}</b>. Check the address, or deploy an app with <code>berth deploy</code>."),
    )
}

const BAD_GATEWAY_DETAIL: &str =
    "The app did not answer this request. It may be restarting; try again in a moment.";

/// 502: the app did not answer properly.
pub fn bad_gateway() -> Response<EdgeBody> {
    page(StatusCode::BAD_GATEWAY, "Bad gateway", BAD_GATEWAY_DETAIL)
}

/// [`bad_gateway`] as the bytes of an HTTP/1.1 response that closes its connection.
pub fn bad_gateway_http1() -> Vec<u8> {
    let html = page_html(StatusCode::BAD_GATEWAY, "Bad gateway", BAD_GATEWAY_DETAIL);
    format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html; charset=utf-8\r\nx-berth-error: edge\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
        html.len()
    )
    .into_bytes()
}

/// 503: the app has no running instance.
pub fn unavailable() -> Response<EdgeBody> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable",
        "The app has no healthy instance right now. Try again in a moment.",
    )
}

/// 400: the request has no usable `Host`.
pub fn bad_request() -> Response<EdgeBody> {
    page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The request has no Host header, so berth cannot tell which app it is for.",
    )
}

/// 400: the request's `Host` is repeated, malformed (not `name[:port]` with a numeric
/// port) or disagrees with the address in its request line.
pub fn bad_host() -> Response<EdgeBody> {
    page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The request's Host is repeated, malformed or contradicts its address, so berth cannot tell which app it is for.",
    )
}

/// 413: the request body is larger than the edge takes.
pub fn too_large(limit: u64) -> Response<EdgeBody> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        &format!(
            "The request body is larger than the {} MiB berth accepts.",
            limit >> 20
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_the_host() {
        let r = not_found("<script>x</script>");
        assert_eq!(r.status(), 404);
    }

    #[test]
    fn escape_works() {
        assert_eq!(escape("<a&\"'>"), "&lt;a&amp;&quot;&#39;&gt;");
    }
}
