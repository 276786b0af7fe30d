//! Request path normalisation, and the key routes are matched on.
//!
//! Upstreams receive the normalised path only, so `//`, `/./`, `/../` and
//! percent-encoded dot segments can never be used to reach one route through
//! another's prefix (`/public/%2e%2e/admin` is `/admin`).
//!
//! Routes are matched on a looser key than the path itself, so that a path
//! an upstream would read as a protected route's path is matched (and
//! authorised) by that route, whatever framework the upstream runs:
//! - `;` path parameters are ignored (`/admin;x=1/users` is `/admin/users`),
//!   as servlet containers (Tomcat, Jetty, Spring) ignore them;
//! - letter case is ignored (`/ADMIN` is `/admin`), as Express, ASP.NET and
//!   case-insensitive file systems do;
//! - a trailing slash is ignored (`/admin/` is `/admin`), as Express and
//!   Spring (before 6) do.
//!
//! A dot segment carrying parameters (`..;`, `.;x`, `%2e%2e;`, `..%3B`) is
//! refused outright: servlet containers resolve `/public/..;/admin` to
//! `/admin`, other servers treat `..;` as a plain name, and no single reading
//! is safe for both.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path has a malformed percent-encoding")]
    BadEscape,
    /// Encoded `/`, `\` or NUL are refused: upstreams disagree on whether to
    /// decode them, which is exactly what path-confusion attacks exploit.
    #[error("the request path contains an encoded slash, backslash or NUL")]
    ForbiddenCharacter,
    /// `..;`, `.;x` and their encodings: resolved by some upstreams, not by others.
    #[error("the request path has a dot segment with ';' parameters")]
    DotSegmentWithParams,
}

/// Returns the canonical form of `path` (RFC 3986 §6.2.2): percent-encoded
/// unreserved characters decoded, other escapes upper-cased, empty and dot
/// segments removed. A trailing slash is kept. Paths that are already
/// canonical are returned without allocating.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw in path[1..].split('/') {
        let segment = decode_unreserved(raw)?;
        if is_dot_with_params(&segment) {
            return Err(PathError::DotSegmentWithParams);
        }
        trailing_slash = matches!(segment.as_str(), "" | "." | "..");
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when no rewriting or checking is needed: the common case on the hot path.
fn is_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes.iter().any(|&b| b == b'%' || b == b'\\' || b == b';')
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
}

/// A decoded segment whose part before its parameters is `.` or `..`, with
/// parameters after it (`;` raw or still encoded as `%3B`).
fn is_dot_with_params(segment: &str) -> bool {
    let name = segment
        .split(';')
        .next()
        .unwrap_or_default()
        .split("%3B")
        .next()
        .unwrap_or_default();
    (name == "." || name == "..") && name.len() < segment.len()
}

/// The key a normalised path is matched on: every segment without its `;`
/// parameters, ASCII lower case, its remaining escapes decoded, and no empty
/// segment, so no trailing slash (except for `/`). Servlet containers drop
/// the empty segment that `/admin/;x/users` leaves, and upstreams decode
/// `/a%21b` to `/a!b` and `/caf%C3%A9` to `/café`: so must the key, or a
/// route for one spelling would be bypassed by another. Borrowed when the
/// path is already its own key, the common case.
pub fn match_key(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let plain = !bytes
        .iter()
        .any(|&b| b == b';' || b == b'%' || b.is_ascii_uppercase())
        && (path.len() == 1 || !path.ends_with('/'));
    if plain {
        return Cow::Borrowed(path);
    }
    let mut key = String::with_capacity(path.len());
    for segment in path[1..].split('/') {
        let name = segment.split(';').next().unwrap_or_default();
        if !name.is_empty() {
            key.push('/');
            push_key_segment(&mut key, &name.to_ascii_lowercase());
        }
    }
    if key.is_empty() {
        key.push('/');
    }
    Cow::Owned(key)
}

/// Appends a lower-cased segment with its escapes decoded (but `%3B` and
/// `%25`); a segment whose escapes are not UTF-8 is kept escaped (no route
/// literal can equal it).
fn push_key_segment(key: &mut String, segment: &str) {
    if !segment.contains('%') {
        key.push_str(segment);
        return;
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            // `;` and `%` stay escaped: decoded, they would mean something
            // else to the key itself (and no route literal holds them).
            Some(byte) if byte != b';' && byte != b'%' => {
                decoded.push(byte);
                i += 3;
            }
            _ => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    match String::from_utf8(decoded) {
        Ok(text) => key.push_str(&text),
        Err(_) => key.push_str(segment),
    }
}

fn decode_unreserved(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let value = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadEscape)?;
                match value {
                    b'/' | b'\\' | 0 => return Err(PathError::ForbiddenCharacter),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        out.push(b as char)
                    }
                    _ => {
                        let _ = write!(out, "%{value:02X}");
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::ForbiddenCharacter),
            _ => {
                // Everything else is copied as is; multi-byte UTF-8 is copied
                // byte-run by byte-run below.
                let start = i;
                while i < bytes.len() && bytes[i] != b'%' && bytes[i] != b'\\' {
                    i += 1;
                }
                out.push_str(&segment[start..i]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalize(path).unwrap().into_owned()
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(
            normalize("/api/v1/users").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(normalize("/").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn removes_empty_and_dot_segments() {
        assert_eq!(norm("//a///b"), "/a/b");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/.."), "/");
    }

    #[test]
    fn decodes_encoded_dot_segments_before_resolving_them() {
        assert_eq!(norm("/public/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2E./admin"), "/admin");
        assert_eq!(norm("/public/.%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2e/x"), "/public/x");
    }

    #[test]
    fn decodes_unreserved_and_uppercases_other_escapes() {
        assert_eq!(norm("/%70ublic/x"), "/public/x");
        assert_eq!(norm("/a%20b/%c3%a9"), "/a%20b/%C3%A9");
        assert_eq!(norm("/caf\u{e9}/x%41"), "/caf\u{e9}/xA");
    }

    #[test]
    fn refuses_dot_segments_with_parameters_in_every_spelling() {
        for path in [
            "/public/..;/admin/x",
            "/public/..;jsessionid=1/admin",
            "/public/.;/x",
            "/public/%2e%2e;/admin",
            "/public/%2E%2E;x/admin",
            "/public/..%3b/admin",
            "/public/..%3B/admin",
            "/public/.%2e%3Bx/admin",
            "/..;",
        ] {
            assert_eq!(
                normalize(path),
                Err(PathError::DotSegmentWithParams),
                "{path}"
            );
        }
        // Parameters elsewhere are kept, and so are names that merely start with dots.
        assert_eq!(norm("/a;b=1/c"), "/a;b=1/c");
        assert_eq!(norm("/...;x/y"), "/...;x/y");
        assert_eq!(norm("/..a;x/y"), "/..a;x/y");
    }

    #[test]
    fn match_keys_ignore_parameters_case_and_a_trailing_slash() {
        assert!(matches!(match_key("/api/v1/users"), Cow::Borrowed(_)));
        assert!(matches!(match_key("/"), Cow::Borrowed(_)));
        assert_eq!(match_key("/admin;x=1/users"), "/admin/users");
        assert_eq!(match_key("/ADMIN/Users"), "/admin/users");
        assert_eq!(match_key("/admin/"), "/admin");
        assert_eq!(match_key("/admin;jsessionid=X/"), "/admin");
        assert_eq!(match_key("/;x"), "/");
        assert_eq!(match_key("/admin/;x/users"), "/admin/users");
        assert_eq!(match_key("/caf%C3%A9"), "/caf\u{e9}");
        assert_eq!(match_key("/a%21b/x"), "/a!b/x");
        assert_eq!(match_key("/A%3Bx/y"), "/a%3bx/y");
        assert_eq!(match_key("/%25"), "/%25");
        assert_eq!(match_key("/bad%FF"), "/bad%ff");
    }

    #[test]
    fn refuses_encoded_separators_and_bad_escapes() {
        assert_eq!(normalize("/a%2fb"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a%5Cb"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a\\..\\b"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a%00"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
    }
}
