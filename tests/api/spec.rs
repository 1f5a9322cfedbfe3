//! The spec is code: the document the code produces is the committed `openapi/openapi.json`,
//! is what `/openapi.json` serves, and is snapshot-tested.

use crate::helpers::*;

const REEXPORT: &str = "re-export it: `cargo run -q -- openapi > openapi/openapi.json`, then `npm run generate --prefix clients/typescript`";

#[test]
fn committed_spec_matches_the_code() {
    let code = buildlogs::api::spec_json();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    assert!(
        code == committed,
        "openapi/openapi.json differs from the code's spec: {REEXPORT}"
    );
}

#[test]
fn spec_snapshot() {
    let spec: serde_json::Value = serde_json::from_str(&buildlogs::api::spec_json()).unwrap();
    insta::assert_json_snapshot!("openapi", spec);
}

#[tokio::test]
async fn served_spec_is_the_same_document() {
    let app = spawn_app_with(Backend::Memory, |_| {}).await;
    let resp = app.client().get("/openapi.json").send().await;
    resp.assert_status_is_ok();
    assert_eq!(
        resp.0.into_body().into_string().await.unwrap(),
        buildlogs::api::spec_json()
    );
}

#[test]
fn spec_declares_every_error_and_the_stream_events() {
    let spec: serde_json::Value = serde_json::from_str(&buildlogs::api::spec_json()).unwrap();
    let history = &spec["paths"]["/api/jobs/{job_id}/logs"]["get"];
    let stream = &spec["paths"]["/api/jobs/{job_id}/logs/stream"]["get"];
    let raw = &spec["paths"]["/api/jobs/{job_id}/logs/raw"]["get"];
    let search = &spec["paths"]["/api/jobs/{job_id}/logs/search"]["get"];
    for (op, statuses) in [
        (history, &["200", "400", "401", "404", "500", "503"][..]),
        (
            stream,
            &["200", "204", "400", "401", "404", "429", "500", "503"][..],
        ),
        (raw, &["200", "400", "401", "404", "429", "500", "503"][..]),
        (search, &["200", "400", "401", "404", "500", "503"][..]),
    ] {
        for status in statuses {
            assert!(op["responses"][status].is_object(), "{status} declared");
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &op["responses"][status]["content"]["application/problem+json"]["schema"]
                    ["$ref"];
                assert_eq!(schema, "#/components/schemas/Problem");
            }
        }
        assert_eq!(
            op["security"],
            serde_json::json!([{"BearerAuth": []}, {"SessionCookie": []}])
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["BearerAuth"]["bearerFormat"],
        "JWT"
    );
    let params: Vec<&str> = stream["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"Last-Event-ID"));
    assert_eq!(
        raw["responses"]["200"]["content"]["text/plain; charset=utf-8"]["schema"]["type"], "string",
        "the download is text"
    );
    assert_eq!(
        search["responses"]["200"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
        "#/components/schemas/SearchPage"
    );
    assert!(
        spec["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .contains(&"invalid_query".into())
    );
    let items =
        &stream["responses"]["200"]["content"]["text/event-stream"]["schema"]["items"]["$ref"];
    assert_eq!(items, "#/components/schemas/StreamEvent");
    for name in [
        "StartData",
        "LogLine",
        "HeartbeatData",
        "DoneData",
        "ResetData",
        "RetryData",
    ] {
        assert!(spec["components"]["schemas"][name].is_object(), "{name}");
    }
}
