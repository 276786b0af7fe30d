//! Upstream services through the API: each target's state and counts, and
//! the access records of requests to a service.

use serde_json::json;

use super::Api;
use crate::auth::setup;
use crate::common::{client, closed_port_url, route, Echo, Gateway};

#[tokio::test]
async fn services_are_listed_with_each_targets_state() {
    let live = Echo::named("live");
    let dead = closed_port_url();
    let gateway = Gateway::start(
        setup()
            .raw(&format!(
                "[upstreams.svc]\ntargets = [\"{}\", {{ url = \"{dead}\", weight = 3 }}]\n\
                 [upstreams.svc.passive]\nconsecutive_failures = 1\nejection_time = \"1h\"\n",
                live.url()
            ))
            .route(route("svc", "/s/*", "svc")),
    );
    let api = Api::token(&gateway);
    let listed = api.get("/upstreams").await.expect(200).body;
    assert_eq!(listed[0]["name"], "svc");
    assert_eq!(listed[0]["routes"], json!(["svc"]));
    assert_eq!(listed[0]["targets"][1]["state"], "up");

    let response = client()
        .get(gateway.url("/s/x"))
        .header("x-request-id", "to-svc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let listed = api.get("/upstreams").await.expect(200).body;
    let targets = &listed[0]["targets"];
    assert_eq!(targets[0]["url"], live.url());
    assert_eq!(targets[0]["state"], "up");
    assert_eq!(targets[1]["url"], dead);
    assert_eq!(targets[1]["weight"], 3);
    assert_eq!(targets[1]["state"], "ejected");
    assert_eq!(targets[1]["ejections"], 1);
    assert!(targets[1]["ejected_for_seconds"].as_f64().unwrap() > 3500.0);
    assert_eq!(listed[0]["panicking"], false);

    // The access record names the target and the tries (checked against
    // the document by the call itself).
    gateway.access_line("to-svc");
    let logs = api.get("/logs?request_id=to-svc").await.expect(200).body;
    assert_eq!(logs[0]["target"], live.url());
    assert_eq!(logs[0]["upstream"], "svc");
    let config = api.get("/config").await.expect(200).body;
    assert_eq!(config["upstreams"]["svc"]["targets"][1]["weight"], 3);
}
