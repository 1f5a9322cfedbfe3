//! `GET /api/jobs/{job_id}/logs`: paging, cursors, limits, odd entries, ownership.

use std::collections::HashSet;

use serde_json::Value;

use crate::helpers::*;

async fn get(app: &TestApp, path: &str, user: &str) -> (u16, Value) {
    let resp = app
        .client()
        .get(path)
        .header("Authorization", format!("Bearer {}", token(user)))
        .send()
        .await;
    let status = resp.0.status().as_u16();
    let body = resp.0.into_body().into_string().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn newest_page_oldest_first_with_cursor_fields() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 5).await;

    let (status, body) = get(&app, &format!("/api/jobs/{job}/logs?limit=3"), "user_a").await;
    assert_eq!(status, 200);
    let lines = body["lines"].as_array().unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["line 2", "line 3", "line 4"]);
    assert_eq!(body["has_more"], true);
    assert_eq!(body["oldest_id"], ids[2].as_str());
    let line = &lines[0];
    assert_eq!(line["id"], ids[2].as_str());
    assert_eq!(line["source"], "stdout");
    assert_eq!(line["phase"], "build");
    let ts = line["ts"].as_str().unwrap();
    assert!(
        ts.ends_with("+00:00") && ts.len() == 32,
        "runner timestamp format: {ts}"
    );

    // before_id is exclusive: the next page ends right before the oldest line seen.
    let (_, body) = get(
        &app,
        &format!("/api/jobs/{job}/logs?limit=3&before_id={}", ids[2]),
        "user_a",
    )
    .await;
    let texts: Vec<&str> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["line 0", "line 1"]);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["oldest_id"], ids[0].as_str());
}

#[tokio::test]
async fn paging_visits_every_line_exactly_once() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 1234).await;

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &before {
            Some(b) => format!("/api/jobs/{job}/logs?limit=97&before_id={b}"),
            None => format!("/api/jobs/{job}/logs?limit=97"),
        };
        let (status, body) = get(&app, &path, "user_a").await;
        assert_eq!(status, 200);
        pages += 1;
        let page = page_ids(&body);
        assert!(page.len() <= 97);
        seen.splice(0..0, page.iter().cloned());
        if body["has_more"] == false {
            break;
        }
        before = Some(body["oldest_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages, 1234usize.div_ceil(97));
    assert_eq!(seen, ids, "every line once, in order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1234);
}

#[tokio::test]
async fn default_and_maximum_limits() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    app.lines(&job, 600).await;
    let (_, body) = get(&app, &format!("/api/jobs/{job}/logs"), "user_a").await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 100);
    let (_, body) = get(&app, &format!("/api/jobs/{job}/logs?limit=500"), "user_a").await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 500);
    assert_eq!(body["has_more"], true);
    let (_, body) = get(&app, &format!("/api/jobs/{job}/logs?limit=1"), "user_a").await;
    assert_eq!(body["lines"][0]["text"], "line 599");
}

#[tokio::test]
async fn job_without_a_stream_has_an_empty_page() {
    let app = spawn_app().await;
    let job = app.job("user_a", "queued").await;
    let (status, body) = get(&app, &format!("/api/jobs/{job}/logs"), "user_a").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"lines": [], "has_more": false, "oldest_id": null})
    );
}

#[tokio::test]
async fn missing_and_extra_fields_and_odd_text() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let odd = "tab\there \u{7}bell \u{1b}[31mred\u{1b}[0m 日本語 🚀 \0nul\r\nnext\n\nevent: done\ndata: {}";
    app.writer
        .append_fields(&job, &[("text", "only text")])
        .await
        .unwrap();
    app.writer
        .append_fields(
            &job,
            &[
                ("ts", "t"),
                ("source", "stderr"),
                ("text", odd),
                ("phase", "p"),
                ("extra", "x"),
            ],
        )
        .await
        .unwrap();
    app.writer
        .append_fields(&job, &[("text", "")])
        .await
        .unwrap();
    let (status, body) = get(&app, &format!("/api/jobs/{job}/logs"), "user_a").await;
    assert_eq!(status, 200);
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["text"], "only text");
    assert_eq!(lines[0]["ts"], "");
    assert_eq!(lines[0]["source"], "");
    assert_eq!(lines[0]["phase"], "");
    assert_eq!(lines[1]["text"], odd);
    assert!(lines[1].get("extra").is_none());
    assert_eq!(lines[2]["text"], "");
}

#[tokio::test]
async fn other_users_job_is_the_same_404_as_a_missing_job() {
    let app = spawn_app().await;
    let job = app.job("user_owner", "code").await;
    app.lines(&job, 3).await;
    let theirs = app
        .client()
        .get(format!("/api/jobs/{job}/logs"))
        .header(
            "Authorization",
            format!("Bearer {}", token("user_intruder")),
        )
        .send()
        .await;
    let missing = app
        .client()
        .get("/api/jobs/no-such-job/logs")
        .header(
            "Authorization",
            format!("Bearer {}", token("user_intruder")),
        )
        .send()
        .await;
    assert_eq!(theirs.0.status(), 404);
    assert_eq!(missing.0.status(), 404);
    let h1: Vec<_> = theirs
        .0
        .headers()
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let h2: Vec<_> = missing
        .0
        .headers()
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(h1, h2, "identical headers");
    let b1 = theirs.0.into_body().into_string().await.unwrap();
    let b2 = missing.0.into_body().into_string().await.unwrap();
    assert_eq!(b1, b2, "identical bodies");
    let problem: Value = serde_json::from_str(&b1).unwrap();
    assert_eq!(problem["code"], "job_not_found");
}

async fn assert_problem(app: &TestApp, path: &str, status: u16, code: &str) {
    let resp = app
        .client()
        .get(path)
        .header("Authorization", format!("Bearer {}", token("user_a")))
        .send()
        .await;
    assert_eq!(resp.0.status().as_u16(), status, "{path}");
    assert_eq!(
        resp.0.headers().get("content-type").unwrap(),
        "application/problem+json",
        "{path}"
    );
    let body: Value =
        serde_json::from_str(&resp.0.into_body().into_string().await.unwrap()).unwrap();
    assert_eq!(body["code"], code, "{path}: {body}");
    assert_eq!(body["status"], status);
    for key in ["type", "title", "detail"] {
        assert!(body[key].is_string(), "{path}: {key} in {body}");
    }
    let detail = body["detail"].as_str().unwrap().to_lowercase();
    for leak in ["redis", "jwt", "parse", "panic", "error:"] {
        assert!(
            !detail.contains(leak),
            "{path}: detail leaks {leak}: {detail}"
        );
    }
}

#[tokio::test]
async fn malformed_input_is_a_400_problem() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    app.lines(&job, 2).await;
    for bad in ["0", "501", "-1", "abc", "", "1.5", "99999999999999999999"] {
        assert_problem(
            &app,
            &format!("/api/jobs/{job}/logs?limit={bad}"),
            400,
            "invalid_limit",
        )
        .await;
    }
    for bad in [
        "",
        "1",
        "1-",
        "-1",
        "a-b",
        "1-2-3",
        "+1-1",
        "18446744073709551616-0",
        "%2B",
        "(1-0",
        "-",
        "+",
    ] {
        assert_problem(
            &app,
            &format!("/api/jobs/{job}/logs?before_id={bad}"),
            400,
            "invalid_cursor",
        )
        .await;
    }
    for bad in [
        "%2A",
        "a:b",
        "a%3Ab",
        "%20",
        &"x".repeat(129),
        "job.1",
        "%C3%A9",
    ] {
        assert_problem(
            &app,
            &format!("/api/jobs/{bad}/logs"),
            400,
            "invalid_job_id",
        )
        .await;
    }
    // Valid, just unknown.
    assert_problem(
        &app,
        &format!("/api/jobs/{}/logs", "x".repeat(128)),
        404,
        "job_not_found",
    )
    .await;
    assert_problem(&app, "/api/nope", 404, "not_found").await;
}

#[tokio::test]
async fn trimmed_stream_pages_only_what_is_retained() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let writer = app.writer.clone().with_maxlen(10);
    for i in 0..1000 {
        writer
            .append(
                &job,
                buildlogs::writer::Source::Stdout,
                "build",
                &format!("line {i}"),
            )
            .await
            .unwrap();
    }
    let (_, body) = get(&app, &format!("/api/jobs/{job}/logs?limit=500"), "user_a").await;
    let lines = body["lines"].as_array().unwrap();
    // MAXLEN ~ keeps at least 10 and trims in whole nodes.
    assert!(lines.len() >= 10 && lines.len() < 1000, "{}", lines.len());
    assert_eq!(lines.last().unwrap()["text"], "line 999");
    assert_eq!(body["has_more"], false);
}
