//! Route matching: exact paths, `{name}` segment parameters and `/*` prefixes.
//!
//! The most specific route wins — exact, then parameterised (more literal
//! segments first), then the longest prefix — with ties broken by declaration
//! order. Tables are compiled once per configuration and shared read-only.
//!
//! Requests are matched on their [`match_key`]: without `;` parameters, in
//! lower case, without a trailing slash (see [`path`] for why). Route
//! literals are compared in lower case too, so `/Admin/*` and `/admin/*` are
//! the same route path.

mod path;

use std::collections::HashMap;

use actix_web::http::Method;

pub use path::{match_key, normalize, PathError};

use crate::config::Route;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A parsed route path such as `/users/{id}` or `/static/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    /// Ends in `/*`: matches the prefix itself and everything below it.
    wildcard: bool,
}

impl PathPattern {
    /// Parses a route path, explaining what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("{text:?} must start with '/'"));
        };
        let (rest, wildcard) = match rest.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('/') => {
                (prefix.trim_end_matches('/'), true)
            }
            _ => (rest, false),
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for raw in rest.split('/').filter(|_| !rest.is_empty()) {
            if let Some(name) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!("{text:?} has an invalid parameter name {{{name}}}"));
                }
                if names.contains(&name) {
                    return Err(format!("{text:?} uses the parameter {{{name}}} twice"));
                }
                names.push(name);
                segments.push(Segment::Param);
            } else if raw.is_empty() || raw == "." || raw == ".." {
                return Err(format!(
                    "{text:?} is not a normalised path (empty or dot segment)"
                ));
            } else if raw.contains(['{', '}', '*', '%', '\\', '?', '#', ';']) {
                return Err(format!(
                    "{text:?}: segment {raw:?} may not contain '{{', '}}', '*', '%', '\\\\', '?', '#' or ';' \
                     (use \"{{name}}\" for a parameter and a final \"/*\" for a prefix)"
                ));
            } else {
                segments.push(Segment::Literal(raw.to_ascii_lowercase()));
            }
        }
        if wildcard && segments.contains(&Segment::Param) {
            return Err(format!(
                "{text:?}: a prefix route (\"/*\") cannot also have {{parameters}}"
            ));
        }
        Ok(PathPattern { segments, wildcard })
    }

    /// How many leading literal segments the pattern has (before any
    /// parameter or `*`): what `strip_prefix` removes. `/api/v1/*` → 2.
    pub fn literal_prefix_segments(&self) -> usize {
        self.segments
            .iter()
            .take_while(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// A path this pattern matches, for a test request: parameters become
    /// `1`. `/users/{id}` → `/users/1`, `/static/*` → `/static/`.
    pub fn example(&self) -> String {
        let mut path: String = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param => "/1".to_owned(),
            })
            .collect();
        if self.wildcard || path.is_empty() {
            path.push('/');
        }
        path
    }

    /// The leading literal part of the pattern (before any parameter or
    /// `*`), in lower case. `/api/v1/*` → `/api/v1`.
    fn literal_prefix(&self) -> String {
        self.segments
            .iter()
            .map_while(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Param => None,
            })
            .fold(String::new(), |mut acc, s| {
                acc.push('/');
                acc.push_str(s);
                acc
            })
    }

    fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    fn has_params(&self) -> bool {
        self.segments.len() != self.literal_count()
    }

    fn matches_segments(&self, path: &str) -> bool {
        let mut parts = path[1..].split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Param, Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// The parameterised routes of one segment count. Indexed by the first
/// segment, so a path is only tried against the few routes that can match
/// it, however many there are. Each list is most literal first, ties in
/// declaration order.
#[derive(Debug, Default)]
struct ParamGroup {
    by_first: HashMap<String, Vec<usize>>,
    /// Routes whose first segment is itself a parameter.
    leading_param: Vec<usize>,
}

/// Why no route took a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    NotFound,
    /// The path matched, the method did not; carries the `Allow` header value.
    MethodNotAllowed(String),
}

/// The compiled routing table of one configuration.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    /// Parameterised routes by segment count, then by first segment.
    params: HashMap<usize, ParamGroup>,
    /// Prefix routes keyed by their literal prefix without the trailing `/`.
    prefixes: HashMap<String, Vec<usize>>,
}

impl RouteTable {
    /// Compiles routes, in declaration order, into lookup tables.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut table = RouteTable::default();
        for (index, route) in routes.iter().enumerate() {
            let pattern = &route.pattern;
            if pattern.wildcard {
                table
                    .prefixes
                    .entry(pattern.literal_prefix())
                    .or_default()
                    .push(index);
            } else if pattern.has_params() {
                let group = table.params.entry(pattern.segments.len()).or_default();
                match &pattern.segments[0] {
                    Segment::Literal(first) => {
                        group.by_first.entry(first.clone()).or_default().push(index)
                    }
                    Segment::Param => group.leading_param.push(index),
                }
            } else {
                let mut key = pattern.literal_prefix();
                if key.is_empty() {
                    key.push('/');
                }
                table.exact.entry(key).or_default().push(index);
            }
        }
        let lists = table.params.values_mut().flat_map(|group| {
            group
                .by_first
                .values_mut()
                .chain(std::iter::once(&mut group.leading_param))
        });
        for list in lists {
            // Stable sort keeps declaration order among equally specific routes.
            list.sort_by_key(|&i| std::cmp::Reverse(routes[i].pattern.literal_count()));
        }
        table.routes = routes;
        table
    }

    /// All routes, in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a request's [`match_key`] and method, with its index.
    pub fn match_request(&self, key: &str, method: &Method) -> Result<(usize, &Route), RouteMiss> {
        let mut path_matched: Vec<usize> = Vec::new();
        for index in self.candidates(key) {
            let route = &self.routes[index];
            if route.allows(method) {
                return Ok((index, route));
            }
            path_matched.push(index);
        }
        if path_matched.is_empty() {
            return Err(RouteMiss::NotFound);
        }
        Err(RouteMiss::MethodNotAllowed(
            self.allow_header(&path_matched),
        ))
    }

    /// Routes whose path matches the key, most specific first.
    fn candidates<'a>(&'a self, path: &'a str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.exact.get(path).into_iter().flatten().copied();
        let mut segments = path[1..].split('/');
        let first = segments.next().unwrap_or_default();
        let group = self.params.get(&(1 + segments.count()));
        let named = group.and_then(|g| g.by_first.get(first));
        let params = self
            .most_specific_first(
                named.map_or(&[][..], Vec::as_slice),
                group.map_or(&[][..], |g| g.leading_param.as_slice()),
            )
            .filter(move |&i| self.routes[i].pattern.matches_segments(path));
        let prefixes = ancestors(path)
            .filter_map(|prefix| self.prefixes.get(prefix))
            .flatten()
            .copied();
        exact.chain(params).chain(prefixes)
    }

    /// Two lists of route indices, each most literal first, merged in the
    /// same order.
    fn most_specific_first<'a>(
        &'a self,
        a: &'a [usize],
        b: &'a [usize],
    ) -> impl Iterator<Item = usize> + 'a {
        let rank = |i: usize| (std::cmp::Reverse(self.routes[i].pattern.literal_count()), i);
        let (mut a, mut b) = (a.iter().copied().peekable(), b.iter().copied().peekable());
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(&x), Some(&y)) if rank(y) < rank(x) => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
    }

    fn allow_header(&self, indices: &[usize]) -> String {
        let mut methods: Vec<&str> = Vec::new();
        for &i in indices {
            match &self.routes[i].methods {
                Some(list) => methods.extend(list.iter().map(Method::as_str)),
                None => return "*".to_owned(),
            }
        }
        methods.sort_unstable();
        methods.dedup();
        methods.join(", ")
    }
}

/// `/a/b/c` → `/a/b/c`, `/a/b`, `/a`, `` (the root prefix of `/*`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.trim_end_matches('/');
    let mut next = Some(trimmed);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.rfind('/').map(|cut| &current[..cut]);
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;

    fn route(id: &str, path: &str, methods: Option<&[&str]>) -> Route {
        Route::for_tests(id, path, methods)
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable::new(routes)
    }

    fn id<'a>(t: &'a RouteTable, path: &str, method: Method) -> Result<&'a str, RouteMiss> {
        t.match_request(&match_key(path), &method)
            .map(|(_, r)| r.id.as_str())
    }

    #[test]
    fn parses_and_rejects_patterns() {
        assert!(PathPattern::parse("/users/{id}").is_ok());
        assert!(PathPattern::parse("/*").is_ok());
        assert!(PathPattern::parse("/").is_ok());
        assert!(PathPattern::parse("users").is_err());
        assert!(PathPattern::parse("/a/{}").is_err());
        assert!(PathPattern::parse("/a/{x}/{x}").is_err());
        assert!(PathPattern::parse("/a/*/b").is_err());
        assert!(PathPattern::parse("/a//b").is_err());
        assert!(PathPattern::parse("/a/../b").is_err());
        assert!(PathPattern::parse("/a/{id}/*").is_err());
        assert!(PathPattern::parse("/a;b").is_err());
        assert_eq!(
            PathPattern::parse("/API/v1/*").unwrap().literal_prefix(),
            "/api/v1"
        );
        assert_eq!(
            PathPattern::parse("/api/v1/*")
                .unwrap()
                .literal_prefix_segments(),
            2
        );
    }

    #[test]
    fn most_specific_route_wins() {
        let t = table(vec![
            route("all", "/*", None),
            route("api", "/api/*", None),
            route("user", "/api/users/{id}", None),
            route("me", "/api/users/me", None),
            route("any-two", "/api/{a}/{b}", None),
        ]);
        assert_eq!(id(&t, "/api/users/me", Method::GET), Ok("me"));
        assert_eq!(id(&t, "/api/users/42", Method::GET), Ok("user"));
        assert_eq!(id(&t, "/api/teams/42", Method::GET), Ok("any-two"));
        assert_eq!(id(&t, "/api/users/42/posts", Method::GET), Ok("api"));
        assert_eq!(id(&t, "/api", Method::GET), Ok("api"));
        assert_eq!(id(&t, "/other", Method::GET), Ok("all"));
        assert_eq!(id(&t, "/", Method::GET), Ok("all"));
    }

    #[test]
    fn ties_go_to_the_first_declared_route() {
        let t = table(vec![
            route("first", "/v1/*", None),
            route("second", "/v1/*", None),
        ]);
        assert_eq!(id(&t, "/v1/x", Method::GET), Ok("first"));
    }

    #[test]
    fn versioned_prefixes_route_separately() {
        let t = table(vec![route("v1", "/v1/*", None), route("v2", "/v2/*", None)]);
        assert_eq!(id(&t, "/v1/items", Method::GET), Ok("v1"));
        assert_eq!(id(&t, "/v2/items", Method::GET), Ok("v2"));
        assert_eq!(id(&t, "/v3/items", Method::GET), Err(RouteMiss::NotFound));
        assert_eq!(id(&t, "/v10/items", Method::GET), Err(RouteMiss::NotFound));
    }

    #[test]
    fn method_mismatch_is_405_with_allow_and_falls_through_to_less_specific_routes() {
        let t = table(vec![
            route("read", "/items/{id}", Some(&["GET", "HEAD"])),
            route("write", "/items/{id}", Some(&["PUT"])),
        ]);
        assert_eq!(id(&t, "/items/1", Method::PUT), Ok("write"));
        assert_eq!(
            id(&t, "/items/1", Method::DELETE),
            Err(RouteMiss::MethodNotAllowed("GET, HEAD, PUT".into()))
        );
        let t = table(vec![
            route("exact", "/items", Some(&["GET"])),
            route("rest", "/*", Some(&["POST"])),
        ]);
        assert_eq!(id(&t, "/items", Method::POST), Ok("rest"));
    }

    #[test]
    fn leading_parameters_compete_with_literal_first_segments_by_specificity() {
        let t = table(vec![
            route("two-params", "/{a}/{b}/x", None),
            route("tenant-items", "/{tenant}/items/{id}", None),
            route("user-items", "/users/items/{id}", None),
            route("user-any", "/users/{kind}/{id}", None),
        ]);
        // Two literals beat one, wherever the parameter is.
        assert_eq!(id(&t, "/users/items/1", Method::GET), Ok("user-items"));
        // One literal each: the first declared wins.
        assert_eq!(id(&t, "/acme/items/1", Method::GET), Ok("tenant-items"));
        assert_eq!(id(&t, "/users/teams/1", Method::GET), Ok("user-any"));
        assert_eq!(id(&t, "/a/b/x", Method::GET), Ok("two-params"));
        // Method fall-through crosses the two kinds, in specificity order.
        let t = table(vec![
            route("any-posts", "/{who}/posts/{id}", Some(&["POST"])),
            route("user-posts", "/users/posts/{id}", Some(&["GET"])),
        ]);
        assert_eq!(id(&t, "/users/posts/1", Method::GET), Ok("user-posts"));
        assert_eq!(id(&t, "/users/posts/1", Method::POST), Ok("any-posts"));
        assert_eq!(
            id(&t, "/users/posts/1", Method::DELETE),
            Err(RouteMiss::MethodNotAllowed("GET, POST".into()))
        );
        let t = table(vec![route("tenant", "/{tenant}/items", Some(&["PUT"]))]);
        assert_eq!(
            id(&t, "/acme/items", Method::GET),
            Err(RouteMiss::MethodNotAllowed("PUT".into()))
        );
    }

    #[test]
    fn case_parameters_and_trailing_slashes_match_the_same_route() {
        let t = table(vec![
            route("public", "/*", None),
            route("admin", "/Admin/*", None),
            route("user", "/users/{id}", None),
            route("me", "/users/me", None),
        ]);
        for path in ["/admin/x", "/ADMIN/x", "/admin;x=1/x", "/admin/", "/Admin"] {
            assert_eq!(id(&t, path, Method::GET), Ok("admin"), "{path}");
        }
        assert_eq!(id(&t, "/users/me/", Method::GET), Ok("me"));
        assert_eq!(id(&t, "/Users/ME", Method::GET), Ok("me"));
        assert_eq!(id(&t, "/users/me;v=2", Method::GET), Ok("me"));
        assert_eq!(id(&t, "/users/7/", Method::GET), Ok("user"));
        assert_eq!(id(&t, "/users/;x/me", Method::GET), Ok("me"));
    }

    #[test]
    fn params_do_not_match_empty_segments() {
        let t = table(vec![route("user", "/users/{id}", None)]);
        assert_eq!(id(&t, "/users/", Method::GET), Err(RouteMiss::NotFound));
        assert_eq!(id(&t, "/users/7", Method::GET), Ok("user"));
    }
}
