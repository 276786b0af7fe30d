//! Building configuration files for the gateway under test.
//!
//! Every test describes its configuration with a [`Setup`]: extra `key = value`
//! lines per section plus routes built with [`route`]. Rendering fills in what a
//! test gateway always needs (ephemeral loopback listeners, storage inside the
//! test's temporary directory, JSON logs on stdout) unless the test set the key
//! itself. `$DIR` in any value stands for the test's temporary directory.

use std::path::Path;

/// The sections a test can add lines to, in the order they are rendered.
const SECTIONS: &[&str] = &[
    "server", "upstream", "admin", "storage", "log", "session", "login",
];

/// A gateway configuration under construction.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    sections: Vec<(&'static str, Vec<String>)>,
    routes: Vec<RouteBuilder>,
    raw: Vec<String>,
    defaults: bool,
    /// A whole configuration file used as it is (see [`Setup::file`]).
    file: Option<String>,
}

impl Setup {
    /// An empty configuration that gets the test defaults filled in.
    pub fn new() -> Setup {
        Setup {
            sections: SECTIONS.iter().map(|s| (*s, Vec::new())).collect(),
            routes: Vec::new(),
            raw: Vec::new(),
            defaults: true,
            file: None,
        }
    }

    /// A whole configuration file (e.g. a shipped example) used as it is,
    /// with `$DIR` substituted and no test defaults: set listeners and
    /// storage with `PORTCULLIS_*` variables on the launch.
    pub fn file(text: &str) -> Setup {
        Setup {
            file: Some(text.to_owned()),
            ..Setup::bare()
        }
    }

    /// A configuration rendered exactly as written, without test defaults
    /// (for `check` tests that want to see the file's own values).
    pub fn bare() -> Setup {
        Setup {
            defaults: false,
            ..Setup::new()
        }
    }

    fn add(mut self, section: &str, line: &str) -> Setup {
        let entry = self
            .sections
            .iter_mut()
            .find(|(name, _)| *name == section)
            .expect("a known section");
        entry.1.push(line.to_owned());
        self
    }

    /// Adds a `key = value` line to `[server]`.
    pub fn server(self, line: &str) -> Setup {
        self.add("server", line)
    }

    /// Adds a `key = value` line to `[upstream]`.
    pub fn upstream(self, line: &str) -> Setup {
        self.add("upstream", line)
    }

    /// Adds a `key = value` line to `[admin]`.
    pub fn admin(self, line: &str) -> Setup {
        self.add("admin", line)
    }

    /// Adds a `key = value` line to `[storage]`.
    pub fn storage(self, line: &str) -> Setup {
        self.add("storage", line)
    }

    /// Adds a `key = value` line to `[log]`.
    pub fn log(self, line: &str) -> Setup {
        self.add("log", line)
    }

    /// Adds a `key = value` line to `[session]`.
    pub fn session(self, line: &str) -> Setup {
        self.add("session", line)
    }

    /// Adds a `key = value` line to `[login]`.
    pub fn login(self, line: &str) -> Setup {
        self.add("login", line)
    }

    /// Adds a route.
    pub fn route(mut self, route: RouteBuilder) -> Setup {
        self.routes.push(route);
        self
    }

    /// Appends TOML verbatim after everything else (e.g. `[profile.*]` tables).
    /// Never use this for `[[routes]]`: use [`Setup::route`].
    pub fn raw(mut self, toml: &str) -> Setup {
        self.raw.push(toml.to_owned());
        self
    }

    /// The value a section sets for `key`, as written (quotes removed), with
    /// `$DIR` replaced.
    pub fn value(&self, section: &str, key: &str, dir: &Path) -> Option<String> {
        self.sections
            .iter()
            .find(|(name, _)| *name == section)?
            .1
            .iter()
            .rev()
            .find(|line| line_key(line) == key)
            .map(|line| {
                let value = line.split_once('=').map_or("", |(_, v)| v).trim();
                substitute(value.trim_matches('"'), dir)
            })
    }

    /// The configuration file text for a test whose temporary directory is `dir`.
    pub fn render(&self, dir: &Path) -> String {
        if let Some(file) = &self.file {
            return substitute(file, dir);
        }
        let mut out = String::new();
        for (name, lines) in &self.sections {
            let mut lines = lines.clone();
            if self.defaults {
                let defaults: &[(&str, String)] = &match *name {
                    "server" => vec![("listen", quoted("127.0.0.1:0"))],
                    "admin" => vec![("listen", quoted("127.0.0.1:0"))],
                    "storage" => vec![("path", quoted("$DIR/data"))],
                    "log" => vec![("format", quoted("json")), ("output", quoted("stdout"))],
                    _ => vec![],
                };
                for (key, value) in defaults {
                    if !lines.iter().any(|line| line_key(line) == *key) {
                        lines.push(format!("{key} = {value}"));
                    }
                }
            }
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("[{name}]\n"));
            for line in lines {
                out.push_str(&substitute(&line, dir));
                out.push('\n');
            }
            out.push('\n');
        }
        for route in &self.routes {
            out.push_str(&substitute(&route.render(), dir));
            out.push('\n');
        }
        for raw in &self.raw {
            out.push_str(&substitute(raw, dir));
            out.push('\n');
        }
        out
    }
}

fn line_key(line: &str) -> &str {
    line.split('=').next().unwrap_or("").trim()
}

fn quoted(text: &str) -> String {
    format!("\"{text}\"")
}

/// Replaces `$DIR` with the directory, escaped for a TOML basic string.
fn substitute(text: &str, dir: &Path) -> String {
    let dir = dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    text.replace("$DIR", &dir)
}

/// One `[[routes]]` table. The only place route tables are written, so a
/// change to what every route needs is made here once.
#[derive(Debug, Clone)]
pub struct RouteBuilder {
    id: String,
    path: String,
    upstream: String,
    methods: Option<Vec<String>>,
    /// `auth = ...`; routes are public unless a test asks for a policy,
    /// because the gateway itself denies by default.
    auth: Option<String>,
    extra: Vec<String>,
}

/// A route `id` serving `path` from `upstream`.
pub fn route(id: &str, path: &str, upstream: &str) -> RouteBuilder {
    RouteBuilder {
        id: id.to_owned(),
        path: path.to_owned(),
        upstream: upstream.to_owned(),
        methods: None,
        auth: Some("public".to_owned()),
        extra: Vec::new(),
    }
}

impl RouteBuilder {
    /// Restricts the route to these methods.
    pub fn methods(mut self, methods: &[&str]) -> RouteBuilder {
        self.methods = Some(methods.iter().map(|m| (*m).to_owned()).collect());
        self
    }

    /// Protects the route with the gateway's default policy (a valid session).
    pub fn authenticated(mut self) -> RouteBuilder {
        self.auth = None;
        self
    }

    /// Adds a `key = value` line to the route table.
    pub fn extra(mut self, line: &str) -> RouteBuilder {
        self.extra.push(line.to_owned());
        self
    }

    fn render(&self) -> String {
        let mut out = String::from("[[routes]]\n");
        out.push_str(&format!("id = {}\n", toml_string(&self.id)));
        out.push_str(&format!("path = {}\n", toml_string(&self.path)));
        out.push_str(&format!("upstream = {}\n", toml_string(&self.upstream)));
        if let Some(methods) = &self.methods {
            let list: Vec<String> = methods.iter().map(|m| toml_string(m)).collect();
            out.push_str(&format!("methods = [{}]\n", list.join(", ")));
        }
        if let Some(auth) = &self.auth {
            out.push_str(&format!("auth = {}\n", toml_string(auth)));
        }
        for line in &self.extra {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
