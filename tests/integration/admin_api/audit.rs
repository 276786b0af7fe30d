//! The audit trail: every change, through the token or the console, who
//! made it from where, before and after, and how it ended — failures too;
//! never a secret; kept across restarts.

use serde_json::{json, Value};

use super::Api;
use crate::auth::{add_user, setup, PASSWORD};
use crate::common::{route, Echo, Gateway, SOON};

/// The newest audit record.
async fn last(api: &Api<'_>) -> Value {
    api.get("/audit?limit=1").await.expect(200).body[0].clone()
}

#[tokio::test]
async fn every_change_is_recorded_with_who_where_what_and_its_outcome() {
    let one = Echo::named("one");
    let two = Echo::named("two");
    let mut gateway = Gateway::start(setup().route(route("file", "/f/*", &one.url())));
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let token = Api::token(&gateway);
    let console = Api::console(&gateway, "ada").await;
    let signed_in = last(&token).await;
    assert_eq!(signed_in["action"], "console.login");
    assert_eq!(signed_in["actor"], "ada");
    assert_eq!(signed_in["via"], "console");

    let made = json!({"id": "made", "path": "/made/*", "upstream": one.url(), "auth": "public"});
    token.post("/routes", made).await.expect(201);
    let record = last(&token).await;
    assert_eq!(record["actor"], "token");
    assert_eq!(record["via"], "token");
    assert_eq!(record["address"], "127.0.0.1");
    assert_eq!(record["action"], "route.create");
    assert_eq!(record["target"], "made");
    assert_eq!(record["before"], Value::Null);
    assert_eq!(record["after"]["upstream"], one.url());
    assert_eq!(record["outcome"], "success");
    assert_eq!(record["error"], Value::Null);

    console
        .put(
            "/routes/made",
            json!({"path": "/made/*", "upstream": two.url(), "auth": "public"}),
        )
        .await
        .expect(200);
    let record = last(&token).await;
    assert_eq!(
        (&record["actor"], &record["via"]),
        (&json!("ada"), &json!("console"))
    );
    assert_eq!(record["action"], "route.update");
    assert_eq!(record["before"]["upstream"], one.url());
    assert_eq!(record["after"]["upstream"], two.url());

    // Failures are recorded too.
    token
        .post(
            "/routes",
            json!({"id": "bad", "path": "/bad/*", "upstream": "nowhere"}),
        )
        .await
        .expect(400);
    let record = last(&token).await;
    assert_eq!(record["action"], "route.create");
    assert_eq!(record["target"], "bad");
    assert_eq!(record["outcome"], "failure");
    assert_eq!(record["error"], "bad_request");
    console.delete("/routes/file").await.expect(409);
    let record = last(&token).await;
    assert_eq!(
        (&record["action"], &record["outcome"]),
        (&json!("route.delete"), &json!("failure"))
    );
    assert_eq!(record["error"], "conflict");
    assert_eq!(record["before"]["origin"], "file");

    // Never a secret.
    let new_password = "alice's changed password";
    console
        .patch("/users/alice", json!({"password": new_password}))
        .await
        .expect(200);
    let record = last(&token).await;
    assert_eq!(record["action"], "user.password");
    assert_eq!(record["target"], "alice");
    let issued = token
        .post("/sessions", json!({"user": "alice"}))
        .await
        .expect(201)
        .body;
    let record = last(&token).await;
    assert_eq!(record["action"], "session.issue");
    assert_eq!(record["after"]["session_id"], issued["id"]);
    token
        .put("/log-level", json!({"level": "debug"}))
        .await
        .expect(200);
    let record = last(&token).await;
    assert_eq!(record["action"], "log.level");
    assert_eq!(
        (&record["before"], &record["after"]),
        (&json!("info"), &json!("debug"))
    );
    console.delete("/routes/made").await.expect(204);
    let record = last(&token).await;
    assert_eq!(record["before"]["id"], "made");
    assert_eq!(record["after"], Value::Null);

    let trail = token.get("/audit").await.expect(200);
    for secret in [PASSWORD, new_password, issued["token"].as_str().unwrap()] {
        assert!(
            !trail.text.contains(secret),
            "a secret in the audit trail: {}",
            trail.text
        );
    }
    let ids: Vec<u64> = trail
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    // The system log has every record too.
    let logged = gateway.wait_for_log(
        |v| v["event"] == "audit" && v["action"] == "route.update",
        SOON,
    );
    assert_eq!(logged["actor"], "ada");
    assert_eq!(logged["outcome"], "success");
    assert!(!gateway.raw_log().contains(new_password));

    // Filters and paging.
    let actions = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_ada = token.get("/audit?actor=ada").await.expect(200).body;
    assert!(
        by_ada
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == "ada"),
        "{by_ada}"
    );
    assert_eq!(
        actions(
            &token
                .get("/audit?action=route&target=made")
                .await
                .expect(200)
                .body
        ),
        ["route.delete", "route.update", "route.create"]
    );
    assert_eq!(
        actions(
            &token
                .get("/audit?action=route.create")
                .await
                .expect(200)
                .body
        ),
        ["route.create", "route.create"]
    );
    let page = token
        .get(&format!("/audit?limit=2&before={}", ids[0]))
        .await
        .expect(200)
        .body;
    let paged: Vec<u64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(paged, ids[1..3]);

    // Kept across a restart; ids go on.
    gateway.stop();
    let gateway = gateway.relaunch().start();
    let token = Api::token(&gateway);
    assert_eq!(token.get("/audit").await.expect(200).body, trail.body);
    token
        .put("/log-level", json!({"level": "info"}))
        .await
        .expect(200);
    assert_eq!(last(&token).await["id"], ids[0] + 1);
}

#[tokio::test]
async fn audit_queries_are_checked() {
    let gateway = Gateway::start(setup());
    let token = Api::token(&gateway);
    for query in ["limit=many", "before=-1", "colour=red"] {
        token
            .get(&format!("/audit?{query}"))
            .await
            .expect_error(400, "bad_request");
    }
}
