//! A route's header rules: headers to remove, set and add on the request
//! before it is forwarded and on the response before it is answered, with
//! values that may name `$request_id`, `$client_ip`, `$user` and `$route`.
//! Compiled once; applying them allocates only for values with variables.

use std::collections::BTreeMap;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::model::Errors;
use super::raw::RawHeaderRules;

/// What a request offers the rules' variables.
pub struct Vars<'a> {
    pub request_id: &'a str,
    pub client_ip: std::net::IpAddr,
    /// Empty without a session.
    pub user: &'a str,
    pub route: &'a str,
}

/// The rules for one direction, applied in order: remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

/// A header value with variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// As written, for the admin API.
    pub text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestId,
    ClientIp,
    User,
    Route,
}

/// Headers no rule may name: the framing and hop-by-hop headers, which
/// belong to each connection, and `X-Request-Id`, which the gateway sets.
const RESERVED: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
];

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the rules to `headers`. A value that is not a valid header
    /// value once filled in (a user name with a newline, say) is left out.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, template) in &self.set {
            if let Some(value) = template.render(vars) {
                headers.insert(name.clone(), value);
            }
        }
        for (name, template) in &self.add {
            if let Some(value) = template.render(vars) {
                headers.append(name.clone(), value);
            }
        }
    }

    /// The rules in the keys they are written with.
    pub fn summary(&self) -> serde_json::Value {
        let values = |list: &[(HeaderName, Template)]| {
            list.iter()
                .map(|(name, t)| (name.to_string(), serde_json::Value::from(t.text.clone())))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "remove": self.remove.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
            "set": values(&self.set),
            "add": values(&self.add),
        })
    }
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let name_len = rest[at + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - at - 1);
            let name = &rest[at + 1..at + 1 + name_len];
            parts.push(match name {
                "request_id" => Part::RequestId,
                "client_ip" => Part::ClientIp,
                "user" => Part::User,
                "route" => Part::Route,
                _ => {
                    return Err(format!(
                        "${name} is not a variable (one of: $request_id, $client_ip, $user, $route)"
                    ))
                }
            });
            rest = &rest[at + 1 + name_len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        for part in &parts {
            if let Part::Text(text) = part {
                HeaderValue::from_str(text)
                    .map_err(|_| format!("{text:?} is not a valid header value"))?;
            }
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    fn render(&self, vars: &Vars) -> Option<HeaderValue> {
        if let [Part::Text(text)] = &self.parts[..] {
            return HeaderValue::from_str(text).ok();
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::RequestId => out.push_str(vars.request_id),
                Part::ClientIp => out.push_str(&vars.client_ip.to_string()),
                Part::User => out.push_str(vars.user),
                Part::Route => out.push_str(vars.route),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// Validates one direction's rules under `path`; `owned`: the identity
/// headers, which no rule may name either.
pub(super) fn header_rules(
    e: &mut Errors,
    path: &str,
    raw: Option<RawHeaderRules>,
    owned: &[HeaderName],
) -> HeaderRules {
    let Some(RawHeaderRules { remove, set, add }) = raw else {
        return HeaderRules::default();
    };
    let remove = remove
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, text)| rule_name(e, &format!("{path}.remove[{i}]"), text, owned))
        .collect();
    let mut valued = |which: &str, list: Option<BTreeMap<String, String>>| {
        list.unwrap_or_default()
            .into_iter()
            .filter_map(|(text, value)| {
                let key = format!("{path}.{which}.{text}");
                let header = rule_name(e, &key, &text, owned)?;
                Some((header, e.check(&key, Template::parse(&value))?))
            })
            .collect::<Vec<_>>()
    };
    let set = valued("set", set);
    let add = valued("add", add);
    HeaderRules { remove, set, add }
}

/// A header a rule names, if it is valid and not the gateway's own.
fn rule_name(e: &mut Errors, key: &str, text: &str, owned: &[HeaderName]) -> Option<HeaderName> {
    let name = e.check(
        key,
        HeaderName::from_bytes(text.trim().as_bytes())
            .map_err(|_| format!("{text:?} is not a valid header name")),
    )?;
    if RESERVED.contains(&name.as_str()) || owned.contains(&name) {
        e.push(
            key,
            format!("{name} is the gateway's own header: no rule may change it"),
        );
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            request_id: "abc",
            client_ip: "192.0.2.7".parse().unwrap(),
            user: "alice",
            route: "api",
        }
    }

    #[test]
    fn templates_fill_in_their_variables() {
        let t = Template::parse("id=$request_id; from $client_ip as $user on $route").unwrap();
        assert_eq!(
            t.render(&vars()).unwrap(),
            "id=abc; from 192.0.2.7 as alice on api"
        );
        assert_eq!(
            Template::parse("plain").unwrap().render(&vars()).unwrap(),
            "plain"
        );
        assert!(Template::parse("$nope").unwrap_err().contains("$nope"));
        assert!(Template::parse("a\nb").is_err());
    }

    #[test]
    fn rules_remove_then_set_then_add() {
        let mut errors = Vec::new();
        let rules = header_rules(
            &mut Errors::new(&mut errors),
            "r",
            Some(RawHeaderRules {
                remove: Some(vec!["x-debug".into()]),
                set: Some([("x-env".to_owned(), "prod".to_owned())].into()),
                add: Some([("x-via".to_owned(), "$route".to_owned())].into()),
            }),
            &[],
        );
        assert!(errors.is_empty());
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-debug"),
            HeaderValue::from_static("1"),
        );
        headers.insert(
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("dev"),
        );
        headers.insert(
            HeaderName::from_static("x-via"),
            HeaderValue::from_static("edge"),
        );
        rules.apply(&mut headers, &vars());
        assert!(headers.get("x-debug").is_none());
        assert_eq!(headers.get("x-env").unwrap(), "prod");
        let via: Vec<_> = headers.get_all("x-via").collect();
        assert_eq!(via, ["edge", "api"]);
    }

    #[test]
    fn the_gateways_own_headers_are_out_of_reach() {
        let mut errors = Vec::new();
        let owned = [HeaderName::from_static("x-user-id")];
        header_rules(
            &mut Errors::new(&mut errors),
            "r",
            Some(RawHeaderRules {
                remove: Some(vec!["X-User-Id".into(), "content-length".into()]),
                set: Some([("x-request-id".to_owned(), "x".to_owned())].into()),
                add: Some([("bad name".to_owned(), "x".to_owned())].into()),
            }),
            &owned,
        );
        let keys: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "r.remove[0]",
                "r.remove[1]",
                "r.set.x-request-id",
                "r.add.bad name"
            ]
        );
    }
}
