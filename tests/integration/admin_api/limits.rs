//! Rate limits and the login throttle through the API: the busiest keys
//! with their counts, the locked-out usernames and addresses, and resetting
//! one of them.

use serde_json::json;

use super::Api;
use crate::auth::{add_user, login, setup, PASSWORD};
use crate::common::{client, route, Echo, Gateway};
use crate::rate_limits::{encode, policy, uses};

async fn status(gateway: &Gateway, path: &str) -> u16 {
    client()
        .get(gateway.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn rate_limit_counts_are_listed_and_one_key_is_reset() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .route(route("echo", "/p/*", &echo.url()).extra(&uses("tight")))
            .raw(&policy(
                "tight",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            ))
            .raw("[rate_limits.tight.roles]\npremium = 5\n"),
    );
    let api = Api::token(&gateway);
    assert_eq!(
        api.get("/rate-limits").await.expect(200).body[0]["busiest"],
        json!([])
    );
    for _ in 0..2 {
        assert_eq!(status(&gateway, "/p/x").await, 200);
    }
    assert_eq!(status(&gateway, "/p/x").await, 429);

    let listed = api.get("/rate-limits").await.expect(200).body;
    let tight = &listed[0];
    assert_eq!(tight["name"], "tight", "{listed}");
    assert_eq!(tight["limit"], 2);
    assert_eq!(tight["window_seconds"], 3600.0);
    assert_eq!(tight["roles"], json!({"premium": 5}));
    let busiest = tight["busiest"].as_array().unwrap();
    assert_eq!(busiest.len(), 1, "{listed}");
    assert!(busiest[0]["count"].as_u64().unwrap() >= 2, "{listed}");
    let key = busiest[0]["key"].as_str().unwrap();
    assert!(key.contains("127.0.0.1"), "{listed}");

    api.delete(&format!("/rate-limits/tight/{}", encode(key)))
        .await
        .expect(204);
    assert_eq!(status(&gateway, "/p/x").await, 200);
    api.delete("/rate-limits/tight/someone-else")
        .await
        .expect_error(404, "not_found");
    api.delete(&format!("/rate-limits/nope/{}", encode(key)))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn failed_logins_are_listed_and_one_is_forgotten() {
    let gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 2")
            .login("max_failures_per_ip = 10"),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let api = Api::token(&gateway);
    assert_eq!(api.get("/login-throttle").await.expect(200).body, json!([]));
    for _ in 0..2 {
        assert_eq!(
            login(&gateway, "alice", "not the password").await.status(),
            401
        );
    }
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 429);

    let listed = api.get("/login-throttle").await.expect(200).body;
    let entries = listed.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    let user = entries.iter().find(|e| e["kind"] == "user").unwrap();
    assert_eq!(user["value"], "alice");
    assert_eq!(user["failures"], 2);
    assert_eq!(user["locked"], true);
    let address = entries.iter().find(|e| e["kind"] == "address").unwrap();
    assert!(
        address["value"].as_str().unwrap().contains("127.0.0.1"),
        "{listed}"
    );
    assert_eq!(address["locked"], false);

    api.delete("/login-throttle/user/alice").await.expect(204);
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 200);
    let address = address["value"].as_str().unwrap();
    api.delete(&format!("/login-throttle/address/{}", encode(address)))
        .await
        .expect(204);
    assert_eq!(api.get("/login-throttle").await.expect(200).body, json!([]));
    api.delete("/login-throttle/user/alice")
        .await
        .expect_error(404, "not_found");
    api.delete("/login-throttle/colour/red")
        .await
        .expect_error(404, "not_found");
}
