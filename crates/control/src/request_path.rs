//! The door for request paths: the name an app route acts on is percent-decoded once,
//! before routing and before the guard, and the request goes on with the decoded name in
//! its path. The guard then authorizes exactly the name the handler will read — a name sent
//! encoded (`/git/victim%2egit`, `/v1/apps/%76ictim`) is the same name for both, never one
//! name for the guard and another for the handler.
//!
//! Names of apps (and of repositories, `APP.git`) are DNS labels: a segment whose decoded
//! form holds anything else is refused here as an invalid name, never echoed.
//! `PROJECT/APP` (`/v1/apps/shop%2Fweb`) stays encoded for `qualified`, which checks the
//! project and rewrites it to the plain name.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Path prefixes whose next segment names an app (or its repository).
const APP_PREFIXES: [&str; 3] = ["/v1/apps/", "/ui/apps/", "/git/"];

/// What the door makes of a path.
#[derive(Debug, PartialEq, Eq)]
enum Door {
    /// Nothing to decode: the path goes on as it came.
    AsIs,
    /// The path with its name segment decoded.
    Decoded(String),
    /// The decoded name cannot be an app's.
    Refused,
}

/// Decodes the name segment of an app route, or refuses it.
fn door(path: &str) -> Door {
    let Some(prefix) = APP_PREFIXES.iter().find(|p| path.starts_with(**p)) else {
        return Door::AsIs;
    };
    let rest = &path[prefix.len()..];
    let (segment, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !segment.contains('%') {
        return Door::AsIs;
    }
    let Ok(decoded) = percent_encoding::percent_decode_str(segment).decode_utf8() else {
        return Door::Refused;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let ok = match *prefix {
        "/git/" => plain(decoded.strip_suffix(".git").unwrap_or(&decoded)),
        // `PROJECT/APP`: left encoded for `qualified`, which checks both halves.
        "/v1/apps/" if decoded.contains('/') => return Door::AsIs,
        _ => plain(&decoded),
    };
    if ok {
        Door::Decoded(format!("{prefix}{decoded}{tail}"))
    } else {
        Door::Refused
    }
}

/// Rewrites an app route's encoded name to its decoded form, or refuses it.
pub async fn decode_once(mut req: Request, next: Next) -> Response {
    match door(req.uri().path()) {
        Door::AsIs => next.run(req).await,
        Door::Decoded(path) => {
            let rewritten = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            match rewritten.parse::<Uri>() {
                Ok(uri) => {
                    *req.uri_mut() = uri;
                    next.run(req).await
                }
                Err(_) => refused(),
            }
        }
        Door::Refused => refused(),
    }
}

/// The answer to a path whose name no app can have (the name itself is not echoed: it is
/// whatever the client sent).
fn refused() -> Response {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_app_name",
        "the path names no app: app names are DNS labels",
    )
    .hint("app names are lowercase letters, digits and '-', at most 63 characters")
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_names_are_decoded_once_for_guard_and_handler_alike() {
        assert_eq!(
            door("/git/victim%2egit/info/refs"),
            Door::Decoded("/git/victim.git/info/refs".into())
        );
        assert_eq!(
            door("/git/victim.gi%74/git-upload-pack"),
            Door::Decoded("/git/victim.git/git-upload-pack".into())
        );
        assert_eq!(
            door("/v1/apps/%76ictim/env"),
            Door::Decoded("/v1/apps/victim/env".into())
        );
        assert_eq!(
            door("/ui/apps/%76ictim"),
            Door::Decoded("/ui/apps/victim".into())
        );
    }

    #[test]
    fn plain_paths_and_qualified_names_go_on_as_they_came() {
        assert_eq!(door("/git/shop.git/info/refs"), Door::AsIs);
        assert_eq!(door("/v1/apps/shop/env"), Door::AsIs);
        assert_eq!(door("/v1/apps/front%2Fweb/env"), Door::AsIs);
        assert_eq!(door("/v1/tokens/a%2eb"), Door::AsIs);
    }

    #[test]
    fn names_no_app_can_have_are_refused() {
        for path in [
            "/git/a%2fb.git/info/refs",
            "/git/..%2fother.git/info/refs",
            "/git/%2e%2e.git/info/refs",
            "/ui/apps/a%2fb",
            "/v1/apps/a%00b/env",
            "/v1/apps/%ff/env",
            "/git/Victim%2egit/info/refs",
        ] {
            assert!(door(path) == Door::Refused, "{path}");
        }
    }
}
