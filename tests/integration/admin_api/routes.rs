//! Routes through the API: made, changed and deleted for new requests at
//! once, validated like the file's, kept across restarts and reloads; the
//! file's routes win.

use std::time::Duration;

use serde_json::{json, Value};

use super::Api;
use crate::auth::setup;
use crate::common::gateway::command;
use crate::common::{client, closed_port_url, route, Echo, Gateway, Setup, SOON};
use crate::rate_limits::policy;

/// The status of `GET path` on the proxy and, for a 200 from an echo, its name.
async fn served(gateway: &Gateway, path: &str) -> (u16, String) {
    let response = client().get(gateway.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["upstream"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A public API route `id` for `/{id}/*`.
fn spec(id: &str, upstream: &str) -> Value {
    json!({"id": id, "path": format!("/{id}/*"), "upstream": upstream, "auth": "public"})
}

/// The `(id, origin, serving, shadowed)` of every listed route.
async fn listing(api: &Api<'_>) -> Vec<(String, String, bool, bool)> {
    let routes = api.get("/routes").await.expect(200).body;
    routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["origin"].as_str().unwrap().to_owned(),
                r["serving"].as_bool().unwrap(),
                r["shadowed"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn entry(id: &str, origin: &str, serving: bool, shadowed: bool) -> (String, String, bool, bool) {
    (id.to_owned(), origin.to_owned(), serving, shadowed)
}

/// Rewrites the configuration, sends SIGHUP and waits for the reload.
fn reload(gateway: &Gateway, setup: &Setup) {
    let before = reloads(gateway);
    gateway.write_config(setup);
    gateway.signal("HUP");
    let deadline = std::time::Instant::now() + SOON;
    while reloads(gateway) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload; log:\n{}",
            gateway.raw_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reloads(gateway: &Gateway) -> usize {
    gateway
        .logs()
        .iter()
        .filter(|v| v["msg"] == "configuration reloaded")
        .count()
}

#[tokio::test]
async fn routes_made_changed_and_deleted_take_effect_for_new_requests_at_once() {
    let one = Echo::named("one");
    let two = Echo::named("two");
    let gateway = Gateway::start(setup().route(route("file", "/f/*", &one.url())));
    let api = Api::token(&gateway);
    assert_eq!(served(&gateway, "/made/x").await.0, 404);

    let created = api
        .post(
            "/routes",
            json!({
                "id": "made", "path": "/made/*", "upstream": one.url(), "auth": "public",
                "methods": ["GET", "post"], "timeout": "5s", "strip_prefix": true,
            }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["origin"], "api");
    assert_eq!(created["serving"], true);
    assert_eq!(created["shadowed"], false);
    assert_eq!(created["problems"], json!([]));
    assert_eq!(created["methods"], json!(["GET", "POST"]));
    assert_eq!(created["timeout"], "5s");
    assert_eq!(created["updated_by"], "token");
    assert_eq!(created["created_at"], created["updated_at"]);
    assert_eq!(served(&gateway, "/made/x").await, (200, "one".to_owned()));
    let echoed = client().get(gateway.url("/made/x")).send().await.unwrap();
    let echoed: Value = echoed.json().await.unwrap();
    assert_eq!(echoed["path"], "/x", "strip_prefix applies");

    let updated = api
        .put(
            "/routes/made",
            json!({"path": "/made/*", "upstream": two.url(), "auth": "public"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(updated["upstream"], two.url());
    assert_eq!(
        updated["methods"],
        Value::Null,
        "the whole spec is replaced"
    );
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_eq!(served(&gateway, "/made/x").await, (200, "two".to_owned()));
    assert_eq!(api.get("/routes/made").await.expect(200).body, updated);
    assert_eq!(
        listing(&api).await,
        [
            entry("file", "file", true, false),
            entry("made", "api", true, false)
        ]
    );
    let file = api.get("/routes/file").await.expect(200).body;
    assert_eq!(file["origin"], "file");
    assert!(file.get("created_at").is_none(), "{file}");

    api.delete("/routes/made").await.expect(204);
    assert_eq!(served(&gateway, "/made/x").await.0, 404);
    api.get("/routes/made").await.expect_error(404, "not_found");
    api.delete("/routes/made")
        .await
        .expect_error(404, "not_found");
    api.put("/routes/made", spec("made", &one.url()))
        .await
        .expect_error(404, "not_found");
    assert_eq!(listing(&api).await, [entry("file", "file", true, false)]);
    assert_eq!(served(&gateway, "/f/x").await, (200, "one".to_owned()));
}

#[tokio::test]
async fn an_invalid_route_is_refused_with_every_problem_and_nothing_is_applied() {
    let echo = Echo::start();
    let gateway = Gateway::start(setup().route(route("file", "/f/*", &echo.url())));
    let api = Api::token(&gateway);
    let bad = json!({
        "id": "bad",
        "path": "/bad/*",
        "upstream": "htp://x",
        "methods": ["GET", "FETCH"],
        "timeout": "soon",
        "auth": "nobody",
        "rate_limit": "missing",
    });
    let answer = api
        .post("/routes", bad.clone())
        .await
        .expect_error(400, "bad_request");
    let mut keys = answer.error_keys();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["auth", "methods[1]", "rate_limit", "timeout", "upstream"],
        "{}",
        answer.text
    );
    assert_eq!(listing(&api).await, [entry("file", "file", true, false)]);
    assert_eq!(served(&gateway, "/bad/x").await.0, 404);
    api.get("/routes/bad").await.expect_error(404, "not_found");

    // The same problems, word for word, as the file's check reports.
    let file = gateway.dir().join("bad-route.toml");
    let toml: String = bad
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    std::fs::write(&file, format!("[[routes]]\n{toml}")).unwrap();
    let check = command()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let reported = String::from_utf8_lossy(&check.stderr);
    for problem in answer.body["errors"].as_array().unwrap() {
        let line = format!(
            "routes[0].{}: {}",
            problem["key"].as_str().unwrap(),
            problem["problem"].as_str().unwrap()
        );
        assert!(
            reported.lines().any(|l| l.trim().starts_with(&line)),
            "{line:?} is not what the file's check says:\n{reported}"
        );
    }

    // Keys it does not know, a body that is no route, no id, another id.
    let answer = api
        .post(
            "/routes",
            json!({"id": "x", "path": "/x/*", "upstream": echo.url(), "colour": "red"}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["colour"], "{}", answer.text);
    let answer = api
        .post("/routes", json!([1, 2]))
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["(top level)"], "{}", answer.text);
    let answer = api
        .post("/routes", json!({"path": "/x/*", "upstream": echo.url()}))
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["id"], "{}", answer.text);
    api.post("/routes", spec("made", &echo.url()))
        .await
        .expect(201);
    let answer = api
        .put("/routes/made", spec("renamed", &echo.url()))
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["id"], "{}", answer.text);
    let answer = api
        .put(
            "/routes/made",
            json!({"path": "/made/*", "upstream": "nowhere"}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["upstream"], "{}", answer.text);
    assert_eq!(
        served(&gateway, "/made/x").await.0,
        200,
        "the failed update changed nothing"
    );
    // Not JSON at all, and more than the API reads.
    api.call(reqwest::Method::POST, "/routes")
        .raw("application/json", "{\"id\": ")
        .send()
        .await
        .expect_error(400, "bad_request");
    let huge = json!({"id": "huge", "path": "/huge/*", "upstream": echo.url(), "roles": vec!["r".repeat(100); 1000]});
    api.post("/routes", huge)
        .await
        .expect_error(413, "payload_too_large");
    assert_eq!(
        listing(&api).await,
        [
            entry("file", "file", true, false),
            entry("made", "api", true, false)
        ]
    );
}

#[tokio::test]
async fn the_files_routes_cannot_be_made_changed_or_deleted_through_the_api() {
    let echo = Echo::start();
    let gateway = Gateway::start(setup().route(route("file", "/f/*", &echo.url())));
    let api = Api::token(&gateway);
    api.post("/routes", spec("file", &echo.url()))
        .await
        .expect_error(409, "conflict");
    api.put("/routes/file", spec("file", &echo.url()))
        .await
        .expect_error(409, "conflict");
    api.delete("/routes/file")
        .await
        .expect_error(409, "conflict");
    assert_eq!(listing(&api).await, [entry("file", "file", true, false)]);
    assert_eq!(served(&gateway, "/f/x").await.0, 200);
    // An id the API already uses is taken too.
    api.post("/routes", spec("made", &echo.url()))
        .await
        .expect(201);
    api.post("/routes", spec("made", &echo.url()))
        .await
        .expect_error(409, "conflict");
}

#[tokio::test]
async fn api_routes_survive_a_restart_and_a_reload() {
    let echo = Echo::start();
    let config = setup().route(route("file", "/f/*", &echo.url()));
    let mut gateway = Gateway::start(config.clone());
    let created = Api::token(&gateway)
        .post("/routes", spec("made", &echo.url()))
        .await
        .expect(201)
        .body;
    gateway.stop();
    let gateway = gateway.relaunch().start();
    let api = Api::token(&gateway);
    assert_eq!(served(&gateway, "/made/x").await.0, 200);
    assert_eq!(api.get("/routes/made").await.expect(200).body, created);

    reload(
        &gateway,
        &config.route(route("later", "/later/*", &echo.url())),
    );
    assert_eq!(served(&gateway, "/made/x").await.0, 200);
    assert_eq!(served(&gateway, "/later/x").await.0, 200);
    assert_eq!(
        listing(&api).await,
        [
            entry("file", "file", true, false),
            entry("later", "file", true, false),
            entry("made", "api", true, false),
        ]
    );
}

#[tokio::test]
async fn a_file_route_with_an_api_routes_id_shadows_it_until_the_file_drops_it() {
    let api_side = Echo::named("api");
    let file_side = Echo::named("file");
    let config = setup();
    let gateway = Gateway::start(config.clone());
    let api = Api::token(&gateway);
    api.post("/routes", spec("shared", &api_side.url()))
        .await
        .expect(201);
    let with_file = config
        .clone()
        .route(route("shared", "/shared/*", &file_side.url()));

    reload(&gateway, &with_file);
    let warning = gateway.wait_for_log(
        |v| v["msg"] == "API route not served: the file defines a route with its id",
        SOON,
    );
    assert_eq!(warning["route"], "shared");
    assert_eq!(
        listing(&api).await,
        [
            entry("shared", "file", true, false),
            entry("shared", "api", false, true),
        ]
    );
    assert_eq!(
        served(&gateway, "/shared/x").await,
        (200, "file".to_owned())
    );
    assert_eq!(
        api.get("/routes/shared").await.expect(200).body["origin"],
        "file"
    );
    api.put("/routes/shared", spec("shared", &api_side.url()))
        .await
        .expect_error(409, "conflict");

    // The file drops the id: the API route is served again.
    reload(&gateway, &config);
    assert_eq!(listing(&api).await, [entry("shared", "api", true, false)]);
    assert_eq!(served(&gateway, "/shared/x").await, (200, "api".to_owned()));

    // Moving a route into the file: add it there, reload, delete the API copy.
    reload(&gateway, &with_file);
    api.delete("/routes/shared").await.expect(204);
    assert_eq!(listing(&api).await, [entry("shared", "file", true, false)]);
    assert_eq!(
        served(&gateway, "/shared/x").await,
        (200, "file".to_owned())
    );
    api.delete("/routes/shared")
        .await
        .expect_error(409, "conflict");
    reload(&gateway, &config);
    assert!(listing(&api).await.is_empty());
    assert_eq!(served(&gateway, "/shared/x").await.0, 404);
}

#[tokio::test]
async fn an_api_route_invalid_after_a_reload_is_listed_with_its_problems_and_not_served() {
    let echo = Echo::start();
    let with_policy = setup().raw(&policy(
        "burst",
        &["key = [\"ip\"]", "limit = 100", "window = \"1m\""],
    ));
    let mut gateway = Gateway::start(with_policy.clone());
    let api = Api::token(&gateway);
    let mut limited = spec("limited", &echo.url());
    limited["rate_limit"] = json!(["burst"]);
    api.post("/routes", limited.clone()).await.expect(201);
    assert_eq!(served(&gateway, "/limited/x").await.0, 200);

    reload(&gateway, &setup());
    let warning = gateway.wait_for_log(
        |v| v["msg"] == "API route not served: it is not valid under the new configuration",
        SOON,
    );
    assert_eq!(warning["route"], "limited");
    let listed = api.get("/routes/limited").await.expect(200).body;
    assert_eq!(listed["serving"], false, "{listed}");
    assert_eq!(listed["shadowed"], false, "{listed}");
    assert_eq!(listed["problems"][0]["key"], "rate_limit", "{listed}");
    assert_eq!(listed["rate_limit"], json!(["burst"]), "{listed}");
    assert_eq!(served(&gateway, "/limited/x").await.0, 404);

    // So after a restart; the policy's return serves it again.
    gateway.stop();
    let gateway = gateway.relaunch().with_setup(setup()).start();
    let api = Api::token(&gateway);
    assert_eq!(
        api.get("/routes/limited").await.expect(200).body["serving"],
        false
    );
    assert_eq!(served(&gateway, "/limited/x").await.0, 404);
    reload(&gateway, &with_policy);
    assert_eq!(served(&gateway, "/limited/x").await.0, 200);
    let listed = api.get("/routes/limited").await.expect(200).body;
    assert_eq!(listed["problems"], json!([]));
    assert_eq!(listed["serving"], true);

    // A route stored with one policy name (not a list) is listed the same way.
    let mut single = spec("single", &echo.url());
    single["rate_limit"] = json!("burst");
    let created = api.post("/routes", single).await.expect(201).body;
    assert_eq!(created["rate_limit"], json!(["burst"]));
    reload(&gateway, &setup());
    let listed = api.get("/routes/single").await.expect(200).body;
    assert_eq!(listed["serving"], false);
    assert_eq!(listed["rate_limit"], json!(["burst"]), "{listed}");
}

#[tokio::test]
async fn a_test_request_goes_through_the_proxy() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .route(route("echo", "/p/{name}", &echo.url()))
            .route(route("down", "/down/*", &closed_port_url()))
            .route(route("private", "/private/*", &echo.url()).authenticated()),
    );
    let api = Api::token(&gateway);
    let result = api
        .post(
            "/routes/echo/test",
            json!({"path": "/p/hello", "method": "post"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["method"], "POST");
    assert_eq!(result["path"], "/p/hello");
    let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/p/hello");
    assert_eq!(body["method"], "POST");
    assert_eq!(
        result["response_headers"]["content-type"],
        "application/json"
    );
    assert!(result["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(result["body_truncated"], false);
    // What the upstream was sent, as the upstream saw it.
    let sent = result["upstream_request_headers"]
        .as_array()
        .expect("the headers sent");
    let sent_value = |name: &str| {
        sent.iter()
            .find(|h| h["name"] == name)
            .and_then(|h| h["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        sent_value("x-request-id"),
        result["request_id"].as_str().map(str::to_owned)
    );
    assert_eq!(
        body["headers"]["x-request-id"][0], result["request_id"],
        "{body}"
    );
    assert!(sent_value("x-forwarded-for").is_some(), "{result}");
    assert!(
        !result.to_string().contains("x-portcullis-probe"),
        "the probe's secret header is not shown: {result}"
    );
    assert!(
        body["headers"].get("x-portcullis-probe").is_none(),
        "{body}"
    );
    let hits = echo.hits();

    // Without a path, one the route matches.
    let result = api
        .post("/routes/echo/test", json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(echo.hits(), hits + 1);
    // What a client would see of a failing upstream.
    let result = api
        .post("/routes/down/test", json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(result["status"], 502, "{result}");
    // A request the gateway answers itself sent nothing upstream.
    let result = api
        .post("/routes/private/test", json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(result["status"], 401, "{result}");
    assert_eq!(result["upstream_request_headers"], Value::Null, "{result}");

    let answer = api
        .post("/routes/echo/test", json!({"path": "p/hello"}))
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["path"]);
    let answer = api
        .post("/routes/echo/test", json!({"method": "NOT A METHOD"}))
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["method"]);
    api.post("/routes/nope/test", json!({}))
        .await
        .expect_error(404, "not_found");
    assert_eq!(echo.hits(), hits + 1, "refused tests reach no upstream");
}
