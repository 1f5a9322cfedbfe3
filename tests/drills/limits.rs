//! Hostile input: oversized headers and tokens, odd paths; never a 500, the service stays up.

use crate::helpers::*;

#[tokio::test]
async fn oversized_headers_and_tokens_are_refused_cleanly() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let url = app.url(&format!("/api/jobs/{job}/logs"));

    // A token far past any real session token, in a head under the 64 KiB bound: 401.
    let resp = app
        .http
        .get(&url)
        .bearer_auth("a".repeat(60 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Past the bound, the head itself is refused.
    let resp = app
        .http
        .get(&url)
        .bearer_auth("a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);

    // A header block past the server's limit: refused by the HTTP layer with a 4xx, or the
    // connection is closed; never a 5xx.
    match app
        .http
        .get(&url)
        .header("X-Big", "b".repeat(2 * 1024 * 1024))
        .send()
        .await
    {
        Ok(resp) => assert!(resp.status().is_client_error(), "{}", resp.status()),
        Err(err) => assert!(!err.is_timeout(), "{err}"),
    }
    // Many headers.
    let mut req = app.http.get(&url).bearer_auth(token("user_a"));
    for i in 0..200 {
        req = req.header(format!("x-h{i}"), "v");
    }
    match req.send().await {
        Ok(resp) => assert!(!resp.status().is_server_error(), "{}", resp.status()),
        Err(err) => assert!(!err.is_timeout(), "{err}"),
    }

    // Still serving.
    let resp = app
        .http
        .get(&url)
        .bearer_auth(token("user_a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn hostile_paths_and_queries_never_500() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    for path in [
        format!("/api/jobs/{job}/logs?limit=1&limit=2"),
        format!("/api/jobs/{job}/logs?before_id=1-1&before_id=2-2"),
        format!("/api/jobs/{job}/logs?limit=%00"),
        format!("/api/jobs/{job}/logs?before_id=%FF%FE"),
        "/api/jobs/%00/logs".to_owned(),
        "/api/jobs/%FF/logs".to_owned(),
        "/api/jobs/../../etc/passwd/logs".to_owned(),
        format!("/api/jobs/{job}/logs/stream/extra"),
        "/api/jobs//logs".to_owned(),
        format!("/api/jobs/{}/logs", "9".repeat(5000)),
    ] {
        let resp = app.get_as("user_a", &path).await;
        assert!(
            resp.status().is_client_error() || resp.status().is_success(),
            "{path}: {}",
            resp.status()
        );
    }
}
