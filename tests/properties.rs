//! Property tests for the code that reads what clients send: the session
//! cookie parser, path normalisation with route matching, the header rules
//! at the proxy boundary and the configuration loader.
//!
//! The unit and integration tests pin down the cases someone thought of;
//! these generate the ones nobody did, from alphabets small enough that
//! collisions (a cookie named almost like the session cookie, two routes
//! that differ only in case, a header both hop-by-hop and named by
//! `Connection`) come up in almost every case.
//!
//! Case counts are sized so the whole binary stays well under 20 s in a
//! debug build; `PROPTEST_CASES` overrides every one of them. The long run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --test properties
//! ```
//!
//! Failing inputs are written to `proptest-regressions/` and replayed first
//! on every later run: keep those files committed.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;

use portcullis::auth::{session_cookie_value, strip_session_cookie};
use portcullis::config::{self, ConfigError, ConfigSource};
use portcullis::pipeline::Runtime;
use portcullis::proxy::headers::{copy_end_to_end, Forwarding};
use portcullis::routing::{match_key, normalize, RouteMiss, RouteTable};

/// `PROPTEST_CASES` when set, else `default`: explicit configs would
/// otherwise ignore the variable proptest itself reads.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        // One file for the whole binary, where the doc above says it is.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// Strings made of `pieces`, so generated text is dense in the separators
/// and escapes a parser cares about instead of random code points.
fn soup(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(pieces), 0..=max).prop_map(|parts| parts.concat())
}

// ---------------------------------------------------------------------------
// The session cookie
// ---------------------------------------------------------------------------

/// Session cookie names: the built-in defaults and a short one.
const SESSION_NAMES: &[&str] = &["__Host-portcullis_session", "portcullis_session", "sid"];

/// Other cookies' names, chosen to collide with the session names in every
/// way but equality: prefixes, suffixes, case, the other default.
const NEAR_NAMES: &[&str] = &[
    "sid2",
    "xsid",
    "SID",
    "Sid",
    "sid_",
    "_sid",
    "si",
    "session",
    "portcullis_session",
    "__Host-portcullis_session",
    "__host-portcullis_session",
    "__Host-portcullis_session2",
    "portcullis_sessio",
    "csrf",
    "a",
    "$Version",
];

/// RFC 6265 cookie-octets: what a cookie value may hold unquoted.
fn cookie_value() -> impl Strategy<Value = String> {
    let octets: Vec<char> = (0x21u8..=0x7e)
        .filter(|b| !matches!(b, b'"' | b',' | b';' | b'\\'))
        .map(char::from)
        .collect();
    prop::collection::vec(select(octets), 0..12).prop_map(|v| v.into_iter().collect())
}

/// The separators servers see between cookie pairs (browsers send `"; "`).
const COOKIE_SEPARATORS: &[&str] = &["; ", ";", " ; ", ";\t", ";  "];

/// A cookie jar as a client sends it: the session cookie somewhere among
/// others, the pairs spread over one to three `Cookie` headers (HTTP/2
/// clients split them).
#[derive(Debug, Clone)]
struct Jar {
    name: &'static str,
    value: String,
    quoted: bool,
    /// The other pairs, in order, as written (`name=value`, or a bare name).
    others: Vec<String>,
    position: usize,
    separators: Vec<&'static str>,
    /// Where each `Cookie` header after the first starts, in pair indices.
    splits: Vec<usize>,
}

impl Jar {
    fn pairs(&self) -> Vec<String> {
        let session = if self.quoted {
            format!("{}=\"{}\"", self.name, self.value)
        } else {
            format!("{}={}", self.name, self.value)
        };
        let mut pairs = self.others.clone();
        pairs.insert(self.position.min(pairs.len()), session);
        pairs
    }

    fn headers(&self) -> HeaderMap {
        let pairs = self.pairs();
        let mut starts: Vec<usize> = self.splits.iter().map(|s| s % pairs.len()).collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        starts.push(pairs.len());
        let mut headers = HeaderMap::new();
        for range in starts.windows(2) {
            let mut value = String::new();
            for (i, pair) in pairs[range[0]..range[1]].iter().enumerate() {
                if i > 0 {
                    value.push_str(self.separators[(range[0] + i) % self.separators.len()]);
                }
                value.push_str(pair);
            }
            headers.append(
                HeaderName::from_static("cookie"),
                HeaderValue::from_bytes(value.as_bytes()).expect("no control characters"),
            );
        }
        headers
    }
}

fn other_cookie(value: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (select(NEAR_NAMES), value).prop_map(|(n, v)| format!("{n}={v}")),
        1 => select(NEAR_NAMES).prop_map(str::to_owned),
        1 => "[a-z]{1,6}=",
    ]
}

fn jar_with(value: BoxedStrategy<String>) -> impl Strategy<Value = Jar> {
    (
        select(SESSION_NAMES),
        cookie_value(),
        any::<bool>(),
        prop::collection::vec(other_cookie(value), 0..6),
        any::<usize>(),
        prop::collection::vec(select(COOKIE_SEPARATORS), 1..4),
        prop::collection::vec(any::<usize>(), 0..3),
    )
        .prop_map(
            |(name, value, quoted, others, position, separators, splits)| {
                let others: Vec<String> = others
                    .into_iter()
                    .filter(|pair| pair.split('=').next() != Some(name))
                    .collect();
                Jar {
                    name,
                    value,
                    quoted,
                    position: position % (others.len() + 1),
                    others,
                    separators,
                    splits,
                }
            },
        )
}

fn jar() -> impl Strategy<Value = Jar> {
    jar_with(cookie_value().boxed())
}

/// Header values as they arrive: mostly cookie-ish text, with every byte a
/// `HeaderValue` may hold (tab, visible ASCII, obs-text) and some it may not.
fn raw_header_value() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => select(&[
            "sid", "sid=", "=", ";", "; ", "\"", "a=1", "__Host-portcullis_session", " ", "\t",
            ",", "\\", "sid=\"x\"", "==", ";;",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::collection::vec(any::<u8>(), 1..4),
        1 => "\\PC{1,3}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|parts| parts.concat())
}

/// The pairs of `Cookie` headers as the gateway splits them: every
/// non-empty `;`-separated piece of every readable value, trimmed.
fn cookie_pairs(headers: &HeaderMap) -> Vec<String> {
    // Bytes, as the gateway reads them: a header with one non-UTF-8 byte
    // still carries its other pairs.
    headers
        .get_all("cookie")
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn cookie_header(value: Option<HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = value {
        headers.append(HeaderName::from_static("cookie"), value);
    }
    headers
}

proptest! {
    #![proptest_config(config(512))]

    /// Whatever bytes arrive in `Cookie` headers, neither function panics,
    /// and what is stripped for the upstream holds no session cookie the
    /// gateway itself would find, and nothing the client did not send.
    #[test]
    fn cookie_parsing_survives_any_header_bytes(
        values in prop::collection::vec(raw_header_value(), 0..4),
        name in prop_oneof![select(SESSION_NAMES).prop_map(str::to_owned), "\\PC{0,4}"],
    ) {
        let mut headers = HeaderMap::new();
        for value in values {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(HeaderName::from_static("cookie"), value);
            }
        }
        let _ = session_cookie_value(&headers, &name);
        let stripped = cookie_header(strip_session_cookie(&headers, &name));
        prop_assert_eq!(session_cookie_value(&stripped, &name), None);
        let sent: HashSet<String> = cookie_pairs(&headers).into_iter().collect();
        for pair in cookie_pairs(&stripped) {
            prop_assert!(sent.contains(&pair), "{pair:?} was never sent");
        }
    }

    /// The session cookie among well-formed cookies is found exactly,
    /// wherever it is and however the pairs are spread over headers; the
    /// upstream gets every other cookie, in order, and never the session.
    #[test]
    fn the_session_cookie_is_found_exactly_and_only_it_is_stripped(jar in jar()) {
        assert_jar(&jar)?;
    }

    // Found by this property: browsers send cookie values with UTF-8 as they
    // were set (RFC 6265 forbids them, `document.cookie` does not), and one
    // such cookie made the gateway skip its whole `Cookie` header. Minimal
    // case: `Cookie: sid=; a=\u{80}`, session cookie `sid`.
    /// The same beside cookies whose values hold UTF-8.
    #[test]
    fn the_session_cookie_is_found_beside_cookies_with_utf8_values(
        jar in jar_with(utf8_cookie_value().boxed())
    ) {
        assert_jar(&jar)?;
    }
}

/// Cookie values as browsers send them: cookie-octets and UTF-8.
fn utf8_cookie_value() -> impl Strategy<Value = String> {
    prop_oneof![
        cookie_value(),
        (
            cookie_value(),
            select(&["\u{80}", "é", "€", "中", "😀"][..]),
            cookie_value()
        )
            .prop_map(|(a, b, c)| format!("{a}{b}{c}")),
    ]
}

fn assert_jar(jar: &Jar) -> Result<(), TestCaseError> {
    let headers = jar.headers();
    prop_assert_eq!(
        session_cookie_value(&headers, jar.name),
        Some(jar.value.as_str())
    );
    let stripped = strip_session_cookie(&headers, jar.name);
    let expected = (!jar.others.is_empty()).then(|| jar.others.join("; "));
    prop_assert_eq!(
        stripped
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        expected
    );
    let stripped = cookie_header(stripped);
    for pair in cookie_pairs(&stripped) {
        let name = pair.split('=').next().unwrap_or_default();
        prop_assert_ne!(name, jar.name);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Path normalisation and route matching
// ---------------------------------------------------------------------------

/// Pieces of request paths: separators, dot segments in every spelling,
/// parameters, escapes good and bad, a little non-ASCII.
const PATH_PIECES: &[&str] = &[
    "/", "/", "/", ".", "..", "%2e", "%2E", ";", ";x=1", "%3B", "%3b", "a", "B", "%41", "%7e",
    "%2f", "%5C", "\\", "%00", "%", "%2", "%zz", "%25", "é", "%C3%A9", "?", "#", "~", "-",
];

/// Route literals: few, short and overlapping, so routes and paths collide.
/// `..a` and `x.y` are names that merely contain dots.
const LITERALS: &[&str] = &["a", "b", "ab", "v1", "x.y", "..a", "~u", "a-b"];

/// `true` for RFC 3986 unreserved characters: the ones an escape of which
/// means the same as the character itself.
fn unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Checks that `p` is a normalised path as `normalize` promises.
fn assert_canonical(p: &str) -> Result<(), TestCaseError> {
    prop_assert!(p.starts_with('/'), "{p:?} does not start with '/'");
    prop_assert!(!p.contains("//"), "{p:?} has an empty segment");
    let segments: Vec<&str> = p[1..].split('/').collect();
    for segment in &segments {
        prop_assert!(
            *segment != "." && *segment != "..",
            "{p:?} has a dot segment"
        );
        let name = segment.split(';').next().unwrap_or_default();
        let name = name.split("%3B").next().unwrap_or_default();
        prop_assert!(
            !(name == "." || name == "..") || name.len() == segment.len(),
            "{p:?} has a dot segment with parameters"
        );
    }
    let again = normalize(p);
    prop_assert_eq!(again.as_deref(), Ok(p), "normalising {:?} again", p);
    Ok(())
}

/// A route as generated: literal segments (by index into [`LITERALS`],
/// with a case mask), parameters, and whether it is a `/*` prefix.
#[derive(Debug, Clone)]
struct RouteSpec {
    segments: Vec<Option<(usize, u8)>>,
    prefix: bool,
    methods: Option<&'static str>,
}

impl RouteSpec {
    fn path(&self) -> String {
        let mut path = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            path.push('/');
            match segment {
                Some((literal, mask)) => path.push_str(&with_case(LITERALS[*literal], *mask)),
                None => path.push_str(&format!("{{p{i}}}")),
            }
        }
        if self.prefix {
            path.push_str("/*");
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }
}

/// `text` with the letters whose bit is set in `mask` upper-cased.
fn with_case(text: &str, mask: u8) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask & (1 << (i % 8)) != 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    let literal = || {
        (
            0..LITERALS.len(),
            prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
        )
            .prop_map(Some)
    };
    let methods = prop_oneof![
        3 => Just(None),
        1 => select(&["\"GET\"", "\"POST\"", "\"GET\", \"POST\""][..]).prop_map(Some),
    ];
    let exact = prop::collection::vec(literal(), 0..4).prop_map(|s| (s, false));
    // At least one `{param}` among literals.
    let param = (
        prop::collection::vec(prop_oneof![2 => literal(), 1 => Just(None)], 1..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut s, i)| {
            let at = i.index(s.len());
            s[at] = None;
            (s, false)
        });
    let prefix = prop::collection::vec(literal(), 0..3).prop_map(|s| (s, true));
    (prop_oneof![exact, param, prefix], methods).prop_map(|((segments, prefix), methods)| {
        RouteSpec {
            segments,
            prefix,
            methods,
        }
    })
}

/// Loads a route table the way the gateway does: a TOML file through the
/// configuration loader, then compiled by `Runtime::new`.
fn load_routes(dir: &Path, specs: &[RouteSpec]) -> RouteTable {
    let mut text = String::new();
    for (i, spec) in specs.iter().enumerate() {
        text.push_str(&format!(
            "[[routes]]\nid = \"r{i}\"\npath = \"{}\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"public\"\n",
            spec.path()
        ));
        if let Some(methods) = spec.methods {
            text.push_str(&format!("methods = [{methods}]\n"));
        }
    }
    let file = dir.join("routes.toml");
    std::fs::write(&file, &text).unwrap();
    match config::load(&ConfigSource::File(file)) {
        Ok(config) => Runtime::new(config).routes,
        Err(errors) => panic!("generated routes were refused: {errors:?}\n{text}"),
    }
}

/// Which route takes `key`, by declaration index, or why none does.
fn matched(table: &RouteTable, key: &str, method: &Method) -> Result<usize, RouteMiss> {
    table.match_request(key, method).map(|(index, _)| index)
}

/// One spelling of a literal: letters in either case, unreserved characters
/// sometimes percent-encoded (in either hex case).
fn spelled(literal: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..6, literal.len()).prop_map(move |choices| {
        literal
            .chars()
            .zip(choices)
            .map(|(c, choice)| match choice {
                1 => c.to_ascii_uppercase().to_string(),
                2 if unreserved(c) => format!("%{:02X}", c as u32),
                3 if unreserved(c) => format!("%{:02x}", c.to_ascii_uppercase() as u32),
                _ => c.to_string(),
            })
            .collect()
    })
}

/// One segment of a request path: mostly a spelling of a literal, perhaps
/// with parameters, else a dot segment, an empty one, a number (for
/// `{param}`s) or something the gateway must refuse.
fn request_segment() -> impl Strategy<Value = String> {
    let params = select(&["", "", "", ";x=1", ";", ";jsessionid=AB"][..]);
    prop_oneof![
        8 => (select(LITERALS).prop_flat_map(spelled), params)
            .prop_map(|(segment, params)| format!("{segment}{params}")),
        2 => Just("42".to_owned()),
        1 => select(&[".", "..", "%2e", "%2E%2e", ".%2E", "", ";x=1", ";"][..])
            .prop_map(str::to_owned),
        1 => select(&["..;x=1", ".;", "%2e%2e%3B", "%2f", "%5c", "%zz", "%C3%A9", "A%20B"][..])
            .prop_map(str::to_owned),
    ]
}

fn request_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(request_segment(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(segments, trailing)| {
            let mut path = format!("/{}", segments.join("/"));
            if trailing {
                path.push('/');
            }
            path
        })
}

/// A canonical path (lower case, no parameters, no trailing slash) with
/// spellings of it: case, percent-encoded unreserved characters, `;`
/// parameters, empty `;x` segments, `.` and `x/..` detours, `//` and a
/// trailing slash. Every spelling reads as the canonical path to some
/// upstream, so every one must be matched by the same route.
#[derive(Debug, Clone)]
struct Spellings {
    canonical: String,
    variants: Vec<String>,
}

fn spelling_of(segments: Vec<&'static str>) -> impl Strategy<Value = String> {
    let n = segments.len();
    let spelled_segments: Vec<_> = segments.iter().map(|s| spelled(s)).collect();
    let decoration = (
        select(&["", "", ";x=1", ";", ";jsessionid=AB"][..]),
        select(&["", "", "", "./", ";x/", "/", "b/../", "ab;q/../", "%2e/"][..]),
    );
    (
        spelled_segments,
        prop::collection::vec(decoration, n),
        select(&["", "", "/", ";x", "/;x", "/.", "/b/.."][..]),
        any::<bool>(),
    )
        .prop_map(|(names, decorations, end, leading_empty)| {
            let mut path = String::from(if leading_empty { "//" } else { "/" });
            for (name, (params, before)) in names.iter().zip(&decorations) {
                path.push_str(before);
                path.push_str(name);
                path.push_str(params);
                path.push('/');
            }
            path.pop();
            if names.is_empty() {
                path = "/".to_owned();
            }
            path.push_str(end);
            path
        })
}

fn spellings() -> impl Strategy<Value = Spellings> {
    prop::collection::vec(prop_oneof![4 => select(LITERALS), 1 => Just("42")], 0..4).prop_flat_map(
        |segments| {
            let canonical = format!("/{}", segments.join("/"));
            prop::collection::vec(spelling_of(segments), 1..5).prop_map(move |variants| Spellings {
                canonical: canonical.clone(),
                variants,
            })
        },
    )
}

fn method() -> impl Strategy<Value = Method> {
    select(&["GET", "POST", "DELETE"][..]).prop_map(|m| m.parse().unwrap())
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

proptest! {
    #![proptest_config(config(2048))]

    /// `normalize` takes any string: it never panics, and what it returns
    /// is a canonical path.
    #[test]
    fn normalize_never_panics_and_returns_canonical_paths(
        path in prop_oneof![any::<String>(), soup(PATH_PIECES, 16), "/\\PC{0,24}"]
    ) {
        if let Ok(p) = normalize(&path) {
            assert_canonical(&p)?;
            let key = match_key(&p);
            prop_assert_eq!(match_key(&key), key.clone(), "a match key is its own key");
        }
    }

    /// The same from bytes, as a request target arrives: any byte string
    /// that is valid UTF-8.
    #[test]
    fn normalize_takes_any_utf8_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32),
            prop::collection::vec(select(b"/.%;2eEfF3bB5cC0a\\\xc3\xa9".to_vec()), 0..32),
        ]
    ) {
        if let Ok(path) = std::str::from_utf8(&bytes) {
            if let Ok(p) = normalize(path) {
                assert_canonical(&p)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The path that is forwarded is matched by the same route that
    /// authorised it: whatever route (or miss) the gateway chose for
    /// `normalize(path)`, normalising the forwarded path again and matching
    /// it gives the same, so an upstream that normalises in turn cannot be
    /// steered into another route's territory.
    #[test]
    fn the_forwarded_path_is_matched_by_the_route_that_authorised_it(
        routes in prop::collection::vec(route_spec(), 1..=8),
        paths in prop::collection::vec((request_path(), method()), 16),
    ) {
        let dir = scratch_dir();
        let table = load_routes(dir.path(), &routes);
        for (path, method) in &paths {
            let Ok(p) = normalize(path) else { continue };
            let authorised = matched(&table, &match_key(&p), method);
            let again = normalize(&p);
            prop_assert_eq!(again.as_deref(), Ok(&*p), "normalising {:?} again", p);
            let forwarded = matched(&table, &match_key(&again.unwrap()), method);
            prop_assert_eq!(
                &forwarded,
                &authorised,
                "{:?} (normalised {:?}) in {:?}",
                path,
                p,
                routes.iter().map(RouteSpec::path).collect::<Vec<_>>()
            );
        }
    }

    /// No spelling of a path (case, `;` parameters, escapes of unreserved
    /// characters, dot detours, a trailing slash) is matched by a different
    /// route than its canonical spelling.
    #[test]
    fn every_spelling_of_a_path_is_matched_by_the_same_route(
        routes in prop::collection::vec(route_spec(), 1..=8),
        paths in prop::collection::vec((spellings(), method()), 8),
    ) {
        let dir = scratch_dir();
        let table = load_routes(dir.path(), &routes);
        for (spellings, method) in &paths {
            let canonical = matched(&table, &match_key(&spellings.canonical), method);
            for variant in &spellings.variants {
                let p = normalize(variant);
                prop_assert!(p.is_ok(), "{:?} was refused: {:?}", variant, p);
                let p = p.unwrap();
                prop_assert_eq!(
                    &matched(&table, &match_key(&p), method),
                    &canonical,
                    "{:?} (normalised {:?}, canonical {:?}) in {:?}",
                    variant,
                    p,
                    spellings.canonical,
                    routes.iter().map(RouteSpec::path).collect::<Vec<_>>()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Header rules
// ---------------------------------------------------------------------------

/// Hop-by-hop headers, as the gateway and RFC 9110 §7.6.1 list them, plus
/// `Content-Length` which the gateway re-derives.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
];

/// Headers only the gateway speaks, or that a client may never pass on.
const FORWARDING: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "forwarded",
    "via",
    "x-original-url",
    "x-rewrite-url",
    "expect",
];

/// End-to-end names, identity-looking names and names with `_`.
const OTHER_NAMES: &[&str] = &[
    "accept",
    "x-custom",
    "x-secret",
    "cookie",
    "host",
    "x-user-id",
    "x-user-roles",
    "x-session-id",
    "x_user_id",
    "x_forwarded_for",
    "x_real_ip",
    "x-forwarded_host",
    "x_custom",
    "authorization",
];

fn header_name_text() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        2 => select(HOP_BY_HOP),
        3 => select(FORWARDING),
        3 => select(OTHER_NAMES),
    ]
}

/// A `Connection` value: a list of names from the pool, in any case, with
/// optional whitespace and empty items.
fn connection_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop_oneof![
                4 => header_name_text().prop_map(str::to_owned),
                1 => select(&["close", "keep-alive", "", "x-unknown"][..]).prop_map(str::to_owned),
            ],
            any::<u8>(),
            select(&["", " ", "\t", "  "][..]),
            select(&[",", ", ", " ,", ",,"][..]),
        ),
        1..5,
    )
    .prop_map(|items| {
        let mut value = String::new();
        for (name, mask, pad, comma) in items {
            if !value.is_empty() {
                value.push_str(comma);
            }
            value.push_str(pad);
            value.push_str(&with_case(&name, mask));
            value.push_str(pad);
        }
        value
    })
}

/// A header map a client might send: names from the pools (the same name
/// repeated sometimes), values ordinary text, `Connection` values lists.
fn inbound_headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let value = prop_oneof![
        select(
            &[
                "1",
                "6.6.6.6",
                "https",
                "for=6.6.6.6",
                "/admin",
                "evil",
                "1.0 corp",
                "100-continue"
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
    ];
    prop::collection::vec(
        prop_oneof![
            4 => (header_name_text(), value),
            1 => connection_value().prop_map(|v| ("connection", v)),
        ],
        0..12,
    )
}

fn header_map(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("visible ASCII"),
        );
    }
    headers
}

/// The names the `Connection` headers list, lower case, read independently
/// of the gateway: comma-separated, optional whitespace around each.
fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|item| {
            String::from_utf8_lossy(item)
                .trim_matches([' ', '\t'])
                .to_ascii_lowercase()
        })
        .filter(|item| !item.is_empty())
        .collect()
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
    ]
}

/// What the gateway knows about a request from an untrusted peer (so the
/// client is the peer).
fn untrusted(
    peer: IpAddr,
    https: bool,
    host: Option<&'static str>,
    stripped_prefix: Option<&'static str>,
    allow_underscores: bool,
) -> Forwarding<'static> {
    Forwarding {
        peer,
        peer_trusted: false,
        client: peer,
        https,
        host: host.map(HeaderValue::from_static),
        stripped_prefix,
        allow_underscores,
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Nothing hop-by-hop crosses the proxy, nor anything `Connection`
    /// names; everything else does, every value in order.
    #[test]
    fn hop_by_hop_and_connection_named_headers_never_pass(pairs in inbound_headers()) {
        let inbound = header_map(&pairs);
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |_| false);
        let named = connection_names(&inbound);
        for (name, _) in out.iter() {
            prop_assert!(!HOP_BY_HOP.contains(&name.as_str()), "{name} passed");
            prop_assert!(!named.iter().any(|n| n == name.as_str()), "{name} is named by Connection");
        }
        for (name, _) in inbound.iter() {
            if !HOP_BY_HOP.contains(&name.as_str()) && !named.iter().any(|n| n == name.as_str()) {
                prop_assert_eq!(values(&out, name.as_str()), values(&inbound, name.as_str()));
            }
        }
    }

    /// From an untrusted peer no forwarding header the client wrote
    /// reaches the upstream; after `write`, the gateway's own values are
    /// the only ones there (`Via` aside, which the gateway extends).
    #[test]
    fn only_the_gateway_speaks_for_an_untrusted_client(
        pairs in inbound_headers(),
        peer in address(),
        https in any::<bool>(),
        host in prop::option::of(select(&["example.com", "gw.test:8443", "[::1]:80"][..])),
        stripped_prefix in prop::option::of(select(&["/api", "/a/b"][..])),
        allow_underscores in any::<bool>(),
    ) {
        let inbound = header_map(&pairs);
        let forwarding = untrusted(peer, https, host, stripped_prefix, allow_underscores);
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |name| forwarding.withholds(name));
        let named = connection_names(&inbound);
        for (name, _) in out.iter() {
            let name = name.as_str();
            prop_assert!(!HOP_BY_HOP.contains(&name), "{name} passed");
            prop_assert!(!named.iter().any(|n| n == name), "{name} is named by Connection");
            prop_assert!(!FORWARDING.contains(&name), "the client's {name} passed");
            prop_assert!(allow_underscores || !name.contains('_'), "{name} passed");
        }

        forwarding.write(&inbound, &mut out);
        let peer = peer.to_string();
        prop_assert_eq!(values(&out, "x-forwarded-for"), [peer.clone()]);
        prop_assert_eq!(values(&out, "x-real-ip"), [peer]);
        let proto = if https { "https" } else { "http" };
        prop_assert_eq!(values(&out, "x-forwarded-proto"), [proto]);
        prop_assert_eq!(values(&out, "x-forwarded-host"), host.into_iter().collect::<Vec<_>>());
        prop_assert_eq!(
            values(&out, "x-forwarded-prefix"),
            stripped_prefix.into_iter().collect::<Vec<_>>()
        );
        // RFC 9110 §7.6.3: a proxy appends its own entry to `Via`; the
        // client's entries may stay in front of it, never after it.
        let mut via: Vec<String> = values(&inbound, "via");
        via.push("1.1 portcullis".to_owned());
        prop_assert_eq!(values(&out, "via"), [via.join(", ")]);
        for name in ["forwarded", "x-forwarded-port", "x-forwarded-server", "x-original-url", "x-rewrite-url", "expect"] {
            prop_assert!(out.get(name).is_none(), "{name} was written");
        }
    }

    // Found by this property: with `server.allow_underscore_headers` on,
    // `X_Forwarded_For` passed beside the gateway's own `X-Forwarded-For`,
    // and upstreams that read `_` as `-` (CGI-style ones, Puma before
    // 6.4.3) took the client's value.
    /// No look-alike (`_` for `-`) of a header only the gateway speaks
    /// passes from an untrusted peer, whatever `allow_underscore_headers` says.
    #[test]
    fn look_alikes_of_forwarding_headers_never_pass(
        pairs in inbound_headers(),
        look_alikes in prop::collection::vec((select(FORWARDING), any::<u8>(), "[ -~]{0,8}"), 0..4),
        peer in address(),
        allow_underscores in any::<bool>(),
    ) {
        let mut inbound = header_map(&pairs);
        for (name, mask, value) in look_alikes {
            let name: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| if c == '-' && mask & (1 << (i % 8)) != 0 { '_' } else { c })
                .collect();
            inbound.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        let forwarding = untrusted(peer, false, None, None, allow_underscores);
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |name| forwarding.withholds(name));
        for (name, _) in out.iter() {
            let read_as = name.as_str().replace('_', "-");
            prop_assert!(!FORWARDING.contains(&read_as.as_str()), "the client's {name} passed");
        }
    }

    // Found by this property: a `Connection` value with one byte outside
    // visible ASCII (obs-text) was skipped whole, so the headers it named
    // were forwarded. Minimal case: `Connection: accept, \x80`.
    /// `Connection` lists are honoured even when an item is not ASCII.
    #[test]
    fn connection_lists_with_obs_text_still_name_headers(
        pairs in inbound_headers(),
        list in connection_value(),
        junk in prop::collection::vec(128u8..=255, 1..3),
    ) {
        let mut inbound = header_map(&pairs);
        let mut value = list.into_bytes();
        value.extend_from_slice(b", ");
        value.extend_from_slice(&junk);
        inbound.append(
            HeaderName::from_static("connection"),
            HeaderValue::from_bytes(&value).unwrap(),
        );
        let named = connection_names(&inbound);
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |_| false);
        for (name, _) in out.iter() {
            prop_assert!(!named.iter().any(|n| n == name.as_str()), "{name} is named by Connection");
        }
    }
}

// ---------------------------------------------------------------------------
// The configuration loader
// ---------------------------------------------------------------------------

/// A TOML value as generated.
#[derive(Debug, Clone)]
enum Toml {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Written as it is: datetimes, other integer notations.
    Raw(&'static str),
    Array(Vec<Toml>),
    Table(Entries),
}

/// The entries of one table, in order.
type Entries = Vec<(String, Toml)>;

/// Every key the loader knows, in any section, so generated tables hit
/// real keys (with values of every type) as often as unknown ones. One
/// string, split on whitespace.
const KNOWN_KEYS: &str = "listen tls_cert tls_key trusted_proxies max_header_bytes max_body_bytes \
    request_timeout header_timeout body_timeout keep_alive shutdown_grace workers \
    max_connections allow_underscore_headers client_ipv4_prefix client_ipv6_prefix \
    rate_limit connect_timeout idle_timeout token cookie_name secure same_site \
    max_lifetime rotate_after rotation_grace touch_interval login_path logout_path \
    session_path trusted_origins user_id_header roles_header session_id_header \
    min_password_length max_failures_per_user max_failures_per_ip failure_window \
    max_concurrent_hashes max_hash_wait path cache_capacity session_cache \
    rate_limit_keys login_throttle_keys flush_interval sweep_interval level format \
    output redact_query buffer key limit window fail roles id methods upstream \
    strip_prefix timeout preserve_host auth permissions csrf login_redirect \
    tunnel_check_interval websocket tunnel_idle_timeout";

const SECTION_NAMES: &[&str] = &[
    "server",
    "upstream",
    "admin",
    "storage",
    "log",
    "session",
    "login",
    "rate_limits",
    "routes",
    "profile",
];

/// String values that mean something to some key: durations, sizes,
/// addresses, paths, URLs, header names, enumerations, and nonsense.
const STRINGS: &[&str] = &[
    "10000y",
    "3650d",
    "0s",
    "0ms",
    "1ns",
    "1ms",
    "-1s",
    "30s",
    "1h 30m",
    "5",
    "1e3s",
    "99999999999999999999s",
    "18446744073709551615s",
    "-1KiB",
    "16KiB",
    "0",
    "1EiB",
    "99999999999 EiB",
    "1.5MiB",
    "-0",
    "lots",
    "127.0.0.1:8080",
    "[::1]:0",
    "0.0.0.0:99999",
    "localhost:80",
    "",
    " ",
    "/",
    "/auth/login",
    "/a/{x}",
    "/a/{x}/{x}",
    "/*",
    "/a/*",
    "/a//b",
    "relative",
    "http://127.0.0.1:1",
    "https://",
    "http://u@h",
    "ftp://x",
    "http://h/?q",
    "http://[::1]:99999",
    "x-user-id",
    "bad header",
    "x_under",
    "none",
    "ip",
    "user",
    "session",
    "route",
    "method",
    "header:x-a",
    "header:",
    "header: bad",
    "open",
    "closed",
    "json",
    "pretty",
    "stdout",
    "stderr",
    "strict",
    "lax",
    "public",
    "authenticated",
    "GET",
    "BREW",
    "get",
    "__Host-x",
    "10.0.0.0/8",
    "::/0",
    "300.1.1.1",
    "é",
    "\u{0}",
    "a\nb",
];

/// Valid TOML the other variants do not produce: datetimes and other
/// integer notations. Out-of-range numbers
/// are left to the arbitrary-text property: one makes the whole file
/// unreadable, and the checks after parsing would never run.
const RAW_TOKENS: &[&str] = &[
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    "1979-05-27T00:32:00.999999",
    "0x7f",
    "0o777",
    "0b1",
    "1_000",
    "-inf",
];

fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(KNOWN_KEYS.split_whitespace().collect::<Vec<_>>()).prop_map(str::to_owned),
        2 => select(SECTION_NAMES).prop_map(str::to_owned),
        1 => select(&["", "dev", "staging", "prod", "a.b", " ", "0"][..]).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
        1 => "\\PC{0,6}",
    ]
}

fn toml_leaf() -> impl Strategy<Value = Toml> {
    prop_oneof![
        6 => select(STRINGS).prop_map(|s| Toml::Str(s.to_owned())),
        1 => "\\PC{0,12}".prop_map(Toml::Str),
        3 => prop_oneof![
            any::<i64>(),
            select(&[0, 1, -1, 2, 255, 256, 65_536, 131_073, i64::MIN, i64::MAX][..]),
        ]
        .prop_map(Toml::Int),
        1 => any::<f64>().prop_map(Toml::Float),
        1 => select(&[0.0, -0.0, 0.5, 1e300, -1e-300, f64::NAN, f64::INFINITY][..]).prop_map(Toml::Float),
        2 => any::<bool>().prop_map(Toml::Bool),
        1 => select(RAW_TOKENS).prop_map(Toml::Raw),
    ]
}

fn toml_value() -> impl Strategy<Value = Toml> {
    toml_leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Toml::Array),
            prop::collection::vec((toml_key(), inner), 0..5).prop_map(Toml::Table),
        ]
    })
}

fn toml_table() -> impl Strategy<Value = Entries> {
    prop::collection::vec((toml_key(), toml_value()), 0..6)
}

/// A route entry: mostly the keys a route has, with values of any type.
fn route_table() -> impl Strategy<Value = Entries> {
    let route_keys = &[
        "id",
        "path",
        "upstream",
        "methods",
        "strip_prefix",
        "timeout",
        "preserve_host",
        "auth",
        "roles",
        "permissions",
        "csrf",
        "login_redirect",
        "rate_limit",
        "websocket",
        "tunnel_idle_timeout",
    ][..];
    prop::collection::vec(
        (
            prop_oneof![4 => select(route_keys).prop_map(str::to_owned), 1 => toml_key()],
            toml_value(),
        ),
        0..8,
    )
}

/// A whole configuration file, structurally plausible: known sections (and
/// some unknown), `[[routes]]`, `[rate_limits.<name>]` and profiles, each
/// holding known and unknown keys with values of every type.
#[derive(Debug, Clone)]
struct Document {
    top: Entries,
    sections: Vec<(String, Entries)>,
    policies: Vec<(String, Entries)>,
    routes: Vec<Entries>,
    profiles: Vec<(String, Vec<(String, Entries)>)>,
}

fn section_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(SECTION_NAMES).prop_map(str::to_owned),
        1 => toml_key(),
    ]
}

fn document() -> impl Strategy<Value = Document> {
    let profile_name = prop_oneof![
        4 => select(&["dev", "staging", "prod"][..]).prop_map(str::to_owned),
        1 => toml_key(),
    ];
    let policy_name = prop_oneof![
        select(&["per-client", "none", "", "a.b", "x y"][..]).prop_map(str::to_owned),
        "[a-z-]{1,6}",
    ];
    (
        prop::collection::vec((section_name(), toml_value()), 0..2),
        prop::collection::vec((section_name(), toml_table()), 0..6),
        prop::collection::vec((policy_name, toml_table()), 0..3),
        prop::collection::vec(route_table(), 0..4),
        prop::collection::vec(
            (
                profile_name,
                prop::collection::vec((section_name(), toml_table()), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(top, sections, policies, routes, profiles)| Document {
            top,
            sections,
            policies,
            routes,
            profiles,
        })
}

/// `text` as a TOML basic string: always valid, whatever it holds.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_value(value: &Toml, out: &mut String) {
    match value {
        Toml::Str(s) => out.push_str(&quoted(s)),
        Toml::Int(n) => out.push_str(&n.to_string()),
        Toml::Float(f) if f.is_nan() => out.push_str("nan"),
        Toml::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "inf" } else { "-inf" }),
        Toml::Float(f) => out.push_str(&format!("{f:?}")),
        Toml::Bool(b) => out.push_str(&b.to_string()),
        Toml::Raw(raw) => out.push_str(raw),
        Toml::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_value(item, out);
            }
            out.push(']');
        }
        Toml::Table(entries) => {
            out.push('{');
            for (i, (key, value)) in unique(entries).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&quoted(key));
                out.push_str(" = ");
                render_value(value, out);
            }
            out.push('}');
        }
    }
}

/// The entries with the first of each key: a repeated key makes the whole
/// file invalid TOML, which the arbitrary-text property covers already.
fn unique(entries: &[(String, Toml)]) -> Vec<(&String, &Toml)> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(|(key, _)| seen.insert(key.clone()))
        .map(|(key, value)| (key, value))
        .collect()
}

fn render_entries(entries: &[(String, Toml)], out: &mut String) {
    for (key, value) in unique(entries) {
        out.push_str(&quoted(key));
        out.push_str(" = ");
        render_value(value, out);
        out.push('\n');
    }
}

impl Document {
    fn render(&self) -> String {
        let mut out = String::new();
        // Top-level keys come before any table header; a name used as a
        // plain key is not used again as a table.
        let mut used: HashSet<String> = HashSet::new();
        let top: Entries = self
            .top
            .iter()
            .filter(|(key, _)| used.insert(key.clone()))
            .cloned()
            .collect();
        render_entries(&top, &mut out);
        for (name, entries) in &self.sections {
            if matches!(name.as_str(), "routes" | "rate_limits" | "profile")
                || !used.insert(name.clone())
            {
                continue;
            }
            out.push_str(&format!("\n[{}]\n", quoted(name)));
            render_entries(entries, &mut out);
        }
        if !used.contains("rate_limits") {
            let mut names = HashSet::new();
            for (name, entries) in &self.policies {
                if names.insert(name.clone()) {
                    out.push_str(&format!("\n[rate_limits.{}]\n", quoted(name)));
                    render_entries(entries, &mut out);
                }
            }
        }
        if !used.contains("routes") {
            for route in &self.routes {
                out.push_str("\n[[routes]]\n");
                render_entries(route, &mut out);
            }
        }
        if !used.contains("profile") {
            let mut names = HashSet::new();
            for (profile, sections) in &self.profiles {
                if !names.insert(profile.clone()) {
                    continue;
                }
                let mut seen = HashSet::new();
                for (name, entries) in sections {
                    if seen.insert(name.clone()) {
                        out.push_str(&format!(
                            "\n[profile.{}.{}]\n",
                            quoted(profile),
                            quoted(name)
                        ));
                        render_entries(entries, &mut out);
                    }
                }
            }
        }
        out
    }
}

/// Pieces of TOML syntax for arbitrary-but-TOML-ish text.
const TOML_PIECES: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    " = ",
    "\"",
    "'",
    "\"\"\"",
    "\n",
    "server",
    "routes",
    "profile",
    "prod",
    "rate_limits",
    ".",
    "listen",
    "path",
    "id",
    "1",
    "-",
    "{",
    "}",
    ",",
    "#",
    " ",
    "\\",
    "inf",
    "nan",
    "true",
    "1979-05-27T07:32:00Z",
    "\"30s\"",
    "\"/*\"",
    "\"\"",
    "\\u0000",
    "99999999999999999999",
    "-9223372036854775809",
    "1e400",
];

/// Both entry points accept the text or explain every problem.
fn assert_loads_or_explains(file: &Path) -> Result<(), TestCaseError> {
    let check = |what: &str, result: Result<config::Config, Vec<ConfigError>>| {
        if let Err(errors) = result {
            prop_assert!(!errors.is_empty(), "{what}: Err with no errors");
            for error in &errors {
                prop_assert!(
                    !error.path.is_empty() && !error.message.is_empty(),
                    "{what}: {error:?} has no key path or no message"
                );
            }
        }
        Ok(())
    };
    check("load", config::load(&ConfigSource::File(file.to_owned())))?;
    check("check", config::check(file))?;
    Ok(())
}

fn config_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("portcullis.toml")
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text at all, and text made of TOML's own syntax.
    #[test]
    fn the_loader_survives_any_text(
        text in prop_oneof![any::<String>(), soup(TOML_PIECES, 40)]
    ) {
        let dir = scratch_dir();
        let file = config_file(&dir);
        std::fs::write(&file, &text).unwrap();
        assert_loads_or_explains(&file)?;
    }

    /// Deeply nested arrays and tables: parsers that recurse can overflow
    /// the stack, which no `catch_unwind` would turn into an error.
    #[test]
    fn the_loader_survives_deep_nesting(
        depth in 0usize..5000,
        table in any::<bool>(),
        section in any::<bool>(),
    ) {
        let (open, close) = if table { ("{a = ", "}") } else { ("[", "]") };
        let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let text = if section {
            format!("[server]\nlisten = {value}\n")
        } else {
            format!("server = {value}\n")
        };
        let dir = scratch_dir();
        let file = config_file(&dir);
        std::fs::write(&file, text).unwrap();
        assert_loads_or_explains(&file)?;
    }

    // Found by this property: a top-level key that is the empty string
    // (`[""]`) was reported under an empty key path.
    /// Structurally plausible files: the right sections, known keys with
    /// values of the wrong type, out of range or nonsense.
    #[test]
    fn the_loader_explains_every_plausible_file(document in document()) {
        let dir = scratch_dir();
        let file = config_file(&dir);
        std::fs::write(&file, document.render()).unwrap();
        assert_loads_or_explains(&file)?;
    }
}
