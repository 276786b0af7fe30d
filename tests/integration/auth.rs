//! Session-cookie authentication and route policies.

use crate::common::{client, json, route, Echo, Gateway, Setup};

#[tokio::test]
async fn routes_deny_by_default_without_a_session() {
    let echo = Echo::start();
    let gateway =
        Gateway::start(Setup::new().route(route("private", "/p/*", &echo.url()).authenticated()));
    let response = client().get(gateway.url("/p/x")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(json(response).await["error"], "missing_token");
    assert_eq!(echo.hits(), 0);
}
