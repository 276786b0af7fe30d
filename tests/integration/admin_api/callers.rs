//! Every endpoint against every kind of caller: nobody (401), a viewer
//! (every read works, every change is 403 `read_only`), a console session
//! without its CSRF token or from another origin (403 `csrf_rejected`), and
//! any caller naming another host (421). Every call is one the document
//! lists, and together they cover every operation it lists.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use super::{template_of, Answer, Api, Call, DOCUMENT};
use crate::auth::{add_user, login, setup, PASSWORD};
use crate::common::{client, route, Echo, Gateway};
use crate::rate_limits::{encode, policy, uses};

/// A gateway with one of everything to call the API on.
pub struct World {
    pub gateway: Gateway,
    pub echo: Echo,
    /// A gateway session of `alice`.
    pub session: String,
    /// A key counted by the `per-ip` policy.
    pub counter: String,
}

/// A file route `echo` (rate-limited by `per-ip`) and an API route `made`,
/// both to the echo; users `alice` (a session, a failed login), `vera`
/// (viewer) and `ada` (admin).
pub async fn world() -> World {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .route(route("echo", "/p/*", &echo.url()).extra(&uses("per-ip")))
            .raw(&policy(
                "per-ip",
                &["key = [\"ip\"]", "limit = 1000", "window = \"1h\""],
            )),
    );
    let api = Api::token(&gateway);
    api.post(
        "/routes",
        json!({"id": "made", "path": "/made/*", "upstream": echo.url(), "auth": "public"}),
    )
    .await
    .expect(201);
    add_user(&gateway, "alice", &["staff"], &[]).await;
    add_user(&gateway, "vera", &["viewer"], &[]).await;
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let session = api
        .post("/sessions", json!({"user": "alice", "ttl": "1h"}))
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = client().get(gateway.url("/p/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        login(&gateway, "alice", "not the password").await.status(),
        401
    );
    let listed = api.get("/rate-limits").await.expect(200).body;
    let counter = listed[0]["busiest"][0]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("a counted key: {listed}"))
        .to_owned();
    World {
        gateway,
        echo,
        session,
        counter,
    }
}

/// One call of the API with a valid body.
#[derive(Debug, Clone)]
pub struct Op {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Op {
    pub fn changes(&self) -> bool {
        self.method != Method::GET
    }

    /// Open to any caller on an allowed host.
    pub fn open(&self) -> bool {
        self.path == "/auth/login" || self.path == "/openapi.json"
    }

    /// Acts on the caller's own console session or account.
    pub fn own_account(&self) -> bool {
        self.path == "/auth/logout" || self.path == "/auth/password"
    }

    pub fn on<'a>(&self, api: &'a Api<'a>) -> Call<'a> {
        let call = api.call(self.method.clone(), &self.path);
        match &self.body {
            Some(body) => call.json(body.clone()),
            None => call,
        }
    }
}

/// A call of every operation the document lists, on [`world`].
pub fn every_operation(world: &World) -> Vec<Op> {
    let echo = world.echo.url();
    let spec = json!({"id": "other", "path": "/other/*", "upstream": echo, "auth": "public"});
    let ops = [
        (
            "POST",
            "/auth/login".to_owned(),
            Some(json!({"username": "ada", "password": PASSWORD})),
        ),
        ("POST", "/auth/logout".to_owned(), None),
        ("GET", "/auth/me".to_owned(), None),
        (
            "POST",
            "/auth/password".to_owned(),
            Some(json!({"current_password": PASSWORD, "new_password": "another long password"})),
        ),
        ("GET", "/openapi.json".to_owned(), None),
        ("GET", "/routes".to_owned(), None),
        ("POST", "/routes".to_owned(), Some(spec)),
        ("GET", "/routes/made".to_owned(), None),
        (
            "PUT",
            "/routes/made".to_owned(),
            Some(json!({"path": "/made2/*", "upstream": echo, "auth": "public"})),
        ),
        ("DELETE", "/routes/made".to_owned(), None),
        ("POST", "/routes/made/test".to_owned(), Some(json!({}))),
        ("GET", "/users".to_owned(), None),
        (
            "POST",
            "/users".to_owned(),
            Some(json!({"username": "bob", "password": PASSWORD})),
        ),
        ("GET", "/users/alice".to_owned(), None),
        (
            "PATCH",
            "/users/alice".to_owned(),
            Some(json!({"roles": ["staff", "extra"]})),
        ),
        ("DELETE", "/users/alice".to_owned(), None),
        ("DELETE", "/users/alice/sessions".to_owned(), None),
        ("GET", "/sessions".to_owned(), None),
        (
            "POST",
            "/sessions".to_owned(),
            Some(json!({"user": "alice"})),
        ),
        ("DELETE", format!("/sessions/{}", world.session), None),
        ("GET", "/upstreams".to_owned(), None),
        ("GET", "/rate-limits".to_owned(), None),
        (
            "DELETE",
            format!("/rate-limits/per-ip/{}", encode(&world.counter)),
            None,
        ),
        ("GET", "/login-throttle".to_owned(), None),
        ("DELETE", "/login-throttle/user/alice".to_owned(), None),
        ("GET", "/config".to_owned(), None),
        (
            "PUT",
            "/log-level".to_owned(),
            Some(json!({"level": "info"})),
        ),
        ("GET", "/audit".to_owned(), None),
        ("GET", "/stats".to_owned(), None),
        ("GET", "/logs".to_owned(), None),
        ("GET", "/logs/stream".to_owned(), None),
    ];
    let ops: Vec<Op> = ops
        .into_iter()
        .map(|(method, path, body)| Op {
            method: method.parse().unwrap(),
            path,
            body,
        })
        .collect();
    let called: BTreeSet<(String, String)> = ops
        .iter()
        .map(|op| (op.method.to_string(), template_of(&op.path)))
        .collect();
    let documented: BTreeSet<(String, String)> = DOCUMENT["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let missing: Vec<_> = documented.difference(&called).collect();
    assert!(missing.is_empty(), "these tests call no {missing:?}");
    ops
}

/// What the state the calls could have changed looks like now, as the token sees it.
async fn snapshot(world: &World) -> Value {
    let api = Api::token(&world.gateway);
    let mut audit = api.get("/audit").await.expect(200).body;
    // Reads are not audited, so any new record is a change that got through.
    for record in audit.as_array_mut().unwrap() {
        record.as_object_mut().unwrap().remove("at");
    }
    json!({
        "routes": api.get("/routes").await.expect(200).body,
        "users": api.get("/users").await.expect(200).body,
        "sessions": api.get("/sessions").await.expect(200).body,
        "throttle": api.get("/login-throttle").await.expect(200).body,
        "level": api.get("/config").await.expect(200).body["log"]["level"],
        "audit": audit,
    })
}

fn describe(op: &Op, answer: &Answer) -> String {
    format!("{} {}: {}", op.method, op.path, answer.text)
}

#[tokio::test]
async fn nobody_may_call_anything_but_sign_in_and_the_document() {
    let world = world().await;
    let before = snapshot(&world).await;
    for api in [
        Api::nobody(&world.gateway),
        super::Api {
            gateway: &world.gateway,
            caller: super::Caller::Token("not-the-admin-token-0123456789".into()),
        },
        super::Api {
            gateway: &world.gateway,
            caller: super::Caller::Console {
                cookie: "forged".into(),
                csrf: "forged".into(),
            },
        },
    ] {
        for op in every_operation(&world).iter().filter(|op| !op.open()) {
            let answer = op.on(&api).send().await;
            assert_eq!(
                (answer.status, answer.error()),
                (401, "unauthorized"),
                "{:?}: {}",
                api.caller,
                describe(op, &answer)
            );
        }
    }
    Api::nobody(&world.gateway)
        .get("/openapi.json")
        .await
        .expect(200);
    assert_eq!(snapshot(&world).await, before, "nothing changed");
}

#[tokio::test]
async fn a_viewer_reads_everything_and_changes_nothing() {
    let world = world().await;
    let viewer = Api::console(&world.gateway, "vera").await;
    let before = snapshot(&world).await;
    for op in every_operation(&world) {
        if op.open() || op.own_account() {
            continue;
        }
        let answer = op.on(&viewer).send().await;
        if op.changes() {
            assert_eq!(
                (answer.status, answer.error()),
                (403, "read_only"),
                "{}",
                describe(&op, &answer)
            );
        } else {
            assert_eq!(answer.status, 200, "{}", describe(&op, &answer));
        }
    }
    assert_eq!(snapshot(&world).await, before, "nothing changed");
    viewer.get("/auth/me").await.expect(200);
}

#[tokio::test]
async fn a_viewer_may_change_its_own_password_and_sign_out() {
    let world = world().await;
    let viewer = Api::console(&world.gateway, "vera").await;
    let answer = viewer
        .post(
            "/auth/password",
            json!({"current_password": PASSWORD, "new_password": "the viewer's own new one"}),
        )
        .await
        .expect(200);
    assert_eq!(answer.body["role"], "viewer");
    let viewer = viewer.signed_in(&answer);
    viewer.sign_out().await.expect(200);
    viewer
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    Api::sign_in(&world.gateway, "vera", "the viewer's own new one").await;
}

#[tokio::test]
async fn console_changes_need_the_csrf_token_and_the_consoles_origin() {
    let world = world().await;
    let admin = Api::console(&world.gateway, "ada").await;
    let before = snapshot(&world).await;
    let own = admin.origin();
    let other_port = format!("http://{}", world.gateway.proxy_addr());
    for op in every_operation(&world).iter().filter(|op| op.changes()) {
        let mut refused: Vec<(&str, Call<'_>)> = vec![
            (
                "another origin",
                op.on(&admin).origin(Some("http://evil.example")),
            ),
            ("another port", op.on(&admin).origin(Some(&other_port))),
            ("an opaque origin", op.on(&admin).origin(Some("null"))),
            (
                "https for http",
                op.on(&admin).origin(Some(&own.replace("http:", "https:"))),
            ),
            ("no origin", op.on(&admin).origin(None)),
            (
                "a cross-site fetch",
                op.on(&admin)
                    .origin(None)
                    .header("sec-fetch-site", "cross-site"),
            ),
        ];
        if !op.open() {
            refused.push(("no CSRF token", op.on(&admin).without_csrf()));
            refused.push((
                "another session's CSRF token",
                op.on(&admin).without_csrf().header(
                    "x-csrf-token",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
            ));
        }
        for (what, call) in refused {
            let answer = call.send().await;
            assert_eq!(
                (answer.status, answer.error()),
                (403, "csrf_rejected"),
                "{what}: {}",
                describe(op, &answer)
            );
        }
    }
    assert_eq!(snapshot(&world).await, before, "nothing changed");

    // A browser that sends no Origin says where the call came from in
    // Sec-Fetch-Site.
    admin
        .call(Method::PUT, "/log-level")
        .json(json!({"level": "warn"}))
        .origin(None)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect(200);
    // The bearer token needs neither: cookies are ignored on its calls.
    Api::token(&world.gateway)
        .call(Method::PUT, "/log-level")
        .json(json!({"level": "info"}))
        .header("origin", "http://evil.example")
        .header("cookie", "portcullis_console=forged")
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn another_host_name_is_misdirected() {
    let world = world().await;
    let port = world.gateway.admin_addr().port();
    let before = snapshot(&world).await;
    let token = Api::token(&world.gateway);
    let nobody = Api::nobody(&world.gateway);
    for op in every_operation(&world) {
        for host in [
            "evil.example".to_owned(),
            format!("evil.example:{port}"),
            format!("127.0.0.1:{}", world.gateway.proxy_addr().port()),
            format!("127.0.0.2:{port}"),
        ] {
            for api in [&token, &nobody] {
                let answer = op.on(api).header("host", &host).send().await;
                assert_eq!(
                    (answer.status, answer.error()),
                    (421, "misdirected_request"),
                    "Host {host}: {}",
                    describe(&op, &answer)
                );
            }
        }
    }
    assert_eq!(snapshot(&world).await, before, "nothing changed");
    // Every name of the loopback listener is fine.
    for host in [format!("localhost:{port}"), format!("LOCALHOST:{port}")] {
        token
            .call(Method::GET, "/auth/me")
            .header("host", &host)
            .send()
            .await
            .expect(200);
    }
}
