//! The web component: Earshot's browser page (HTML, one JS module, CSS, an icon),
//! embedded in the .wasm at build time and served at `/...`. More specific routes in
//! `spin.toml` (`/api/v1/...`) win, so the API is unaffected.
//!
//! The answer logic is a pure function ([`respond`]) so it is unit-tested natively;
//! the Spin shell at the bottom only builds for wasm.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Request path it is served at (`/app.js`).
    pub path: &'static str,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
    /// Strong validator, a hash of `body` computed at compile time.
    pub etag: u64,
}

/// FNV-1a, 64-bit: a `const fn`, so every ETag is computed by the compiler.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {
        Asset {
            path: concat!("/", $file),
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $file)),
            etag: fnv1a(include_bytes!(concat!("../assets/", $file))),
        }
    };
}

/// Every file the page consists of. `/` answers with `index.html`.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// File names are not content-hashed, so a long `max-age` would pin an old `app.js`
/// after a deploy: browsers may keep the files but revalidate each use (a 304 via the
/// ETag costs one round trip and no body).
pub const CACHE_CONTROL: &str = "no-cache";

/// The page talks only to its own origin (the WebSocket routes included: CSP `'self'`
/// covers `ws:`/`wss:` of the same host) and loads nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An answer: status, headers, body (empty for HEAD, 304 and errors' HEAD).
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Header name/value pairs.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: &'static [u8],
}

/// The embedded file served at `path`, if any (`/` and the empty path are `index.html`).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = match path {
        "" | "/" => "/index.html",
        p => p,
    };
    ASSETS.iter().find(|a| a.path == path)
}

fn etag_value(asset: &Asset) -> String {
    format!("\"{:016x}\"", asset.etag)
}

/// Whether an `If-None-Match` header value names `etag` (a list, `*`, or weak forms).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn error(status: u16, text: &'static str, head: bool) -> Reply {
    let mut headers = vec![
        ("content-type", "text/plain; charset=utf-8".to_owned()),
        ("cache-control", "no-store".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
    ];
    if status == 405 {
        headers.push(("allow", "GET, HEAD".to_owned()));
    }
    Reply { status, headers, body: if head { b"" } else { text.as_bytes() } }
}

/// Answers one request: `method` (upper case), the path inside the component's route,
/// and the `If-None-Match` header if any.
pub fn respond(method: &str, path: &str, if_none_match: Option<&str>) -> Reply {
    let head = method == "HEAD";
    if method != "GET" && !head {
        return error(405, "method not allowed\n", false);
    }
    let Some(asset) = find(path) else {
        return error(404, "not found\n", head);
    };
    let etag = etag_value(asset);
    let mut headers = vec![
        ("content-type", asset.content_type.to_owned()),
        ("cache-control", CACHE_CONTROL.to_owned()),
        ("etag", etag.clone()),
        ("x-content-type-options", "nosniff".to_owned()),
        ("referrer-policy", "no-referrer".to_owned()),
    ];
    if asset.content_type.starts_with("text/html") {
        headers.push(("content-security-policy", CONTENT_SECURITY_POLICY.to_owned()));
    }
    if if_none_match.is_some_and(|v| matches_etag(v, &etag)) {
        return Reply { status: 304, headers, body: b"" };
    }
    // No content-length on HEAD: the host checks a declared length against the body
    // actually written, and a HEAD body is empty.
    if head {
        return Reply { status: 200, headers, body: b"" };
    }
    headers.push(("content-length", asset.body.len().to_string()));
    Reply { status: 200, headers, body: asset.body }
}

#[cfg(target_arch = "wasm32")]
mod spin {
    use spin_sdk::http::{IntoResponse, Method, Request, Response};

    fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
        let method = match req.method() {
            Method::Get => "GET",
            Method::Head => "HEAD",
            _ => "OTHER",
        };
        // `spin-path-info` is the path below the route's prefix, so the page also works
        // when an operator mounts the component under e.g. `/ui/...`.
        let path = req
            .header("spin-path-info")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| req.path().to_owned());
        let if_none_match = req.header("if-none-match").and_then(|v| v.as_str());
        let reply = super::respond(method, &path, if_none_match);
        let mut builder = Response::builder();
        builder.status(reply.status);
        for (name, value) in reply.headers {
            builder.header(name, value);
        }
        Ok(builder.body(reply.body.to_vec()).build())
    }

    /// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`,
    /// raw pointers), so `unsafe_code` is allowed in this module alone.
    #[allow(unsafe_code)]
    mod export {
        #[spin_sdk::http_component]
        fn handle(
            req: spin_sdk::http::Request,
        ) -> anyhow::Result<impl spin_sdk::http::IntoResponse> {
            super::handle(req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn root_is_the_index_page() {
        for path in ["", "/", "/index.html"] {
            let r = respond("GET", path, None);
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
            assert!(std::str::from_utf8(r.body).unwrap().contains("<!doctype html>"));
            assert!(header(&r, "content-security-policy").is_some());
        }
    }

    #[test]
    fn every_asset_has_its_type_cache_policy_and_length() {
        for a in ASSETS {
            let r = respond("GET", a.path, None);
            assert_eq!((r.status, header(&r, "content-type")), (200, Some(a.content_type)), "{}", a.path);
            assert_eq!(header(&r, "cache-control"), Some(CACHE_CONTROL));
            assert_eq!(header(&r, "content-length"), Some(a.body.len().to_string().as_str()));
            assert!(!a.body.is_empty());
        }
        assert_eq!(header(&respond("GET", "/app.js", None), "content-type"), Some("text/javascript; charset=utf-8"));
    }

    #[test]
    fn head_has_the_headers_and_no_body() {
        let r = respond("HEAD", "/style.css", None);
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(header(&r, "content-type"), Some("text/css; charset=utf-8"));
        assert_eq!(respond("HEAD", "/nope", None).body.len(), 0);
    }

    #[test]
    fn unknown_files_are_404_and_other_methods_405() {
        for path in ["/nope", "/app.js/", "/../Cargo.toml", "/assets/app.js", "/index.html?x"] {
            assert_eq!(respond("GET", path, None).status, 404, "{path}");
        }
        let r = respond("POST", "/", None);
        assert_eq!((r.status, header(&r, "allow")), (405, Some("GET, HEAD")));
    }

    #[test]
    fn a_matching_etag_is_304() {
        let etag = header(&respond("GET", "/app.js", None), "etag").unwrap().to_owned();
        assert_eq!(respond("GET", "/app.js", Some(&etag)).status, 304);
        assert_eq!(respond("GET", "/app.js", Some(&format!("\"x\", W/{etag}"))).status, 304);
        assert_eq!(respond("GET", "/app.js", Some("\"other\"")).status, 200);
        assert_ne!(ASSETS[0].etag, ASSETS[1].etag);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains("http://") && !text.contains("https://") || a.path == "/favicon.svg", "{} links out", a.path);
        }
    }
}
