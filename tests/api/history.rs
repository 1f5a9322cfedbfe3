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
        serde_json::json!({"lines": [], "has_more": false, "oldest_id": null, "has_newer": false, "newest_id": null})
    );
    for cursor in ["before_id=5-0", "after_id=5-0", "around_id=5-0"] {
        let (status, body) = get(&app, &format!("/api/jobs/{job}/logs?{cursor}"), "user_a").await;
        assert_eq!(
            (status, &body["lines"]),
            (200, &serde_json::json!([])),
            "{cursor}"
        );
        assert_eq!(
            (&body["has_more"], &body["has_newer"]),
            (&false.into(), &false.into())
        );
    }
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
                buildlogs::runner_format::Source::Stdout,
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

/// The texts of a page's lines.
fn texts(page: &Value) -> Vec<String> {
    page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn backward_pages_say_whether_newer_lines_exist() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 10).await;
    let (_, newest) = get(&app, &format!("/api/jobs/{job}/logs?limit=3"), "user_a").await;
    assert_eq!(newest["newest_id"], ids[9].as_str());
    assert_eq!(newest["has_newer"], false);
    let (_, older) = get(
        &app,
        &format!("/api/jobs/{job}/logs?limit=3&before_id={}", ids[7]),
        "user_a",
    )
    .await;
    assert_eq!(texts(&older), ["line 4", "line 5", "line 6"]);
    assert_eq!(older["newest_id"], ids[6].as_str());
    assert_eq!(older["has_newer"], true);
    // Past the oldest line: an empty page, with lines newer than the cursor.
    let (_, empty) = get(
        &app,
        &format!("/api/jobs/{job}/logs?before_id={}", ids[0]),
        "user_a",
    )
    .await;
    assert_eq!(texts(&empty), Vec::<String>::new());
    assert_eq!(
        (&empty["has_more"], &empty["has_newer"]),
        (&false.into(), &true.into())
    );
}

#[tokio::test]
async fn forward_paging_visits_every_line_once_while_lines_are_appended() {
    for backend in [Backend::Redis, Backend::Memory] {
        let app = spawn_app_with(backend, |_| {}).await;
        let job = app.job("user_a", "code").await;
        let mut ids = app.lines(&job, 250).await;
        let mut seen: Vec<String> = Vec::new();
        let mut after = "0-0".to_owned();
        let mut pages = 0;
        loop {
            // Lines keep coming while the reader pages.
            if (1..12).contains(&pages) {
                ids.extend(append_lines(&app.writer, &job, 7, "more ").await);
            }
            let (status, page) = get(
                &app,
                &format!("/api/jobs/{job}/logs?limit=40&after_id={after}"),
                "user_a",
            )
            .await;
            assert_eq!(status, 200);
            pages += 1;
            let page_ids = page_ids(&page);
            if let Some(first) = page_ids.first() {
                assert_eq!(page["oldest_id"], first.as_str());
                assert_eq!(page["newest_id"], page_ids.last().unwrap().as_str());
                // Older lines exist before every page but a first one from the start.
                assert_eq!(page["has_more"], !seen.is_empty(), "{backend:?}");
            }
            seen.extend(page_ids);
            if page["has_newer"] == false {
                break;
            }
            after = page["newest_id"].as_str().unwrap().to_owned();
        }
        assert_eq!(
            seen, ids,
            "{backend:?}: every line once, in order, appended ones too"
        );
        assert!(pages >= 8, "{pages}");
    }
}

/// Lines with ids of our choosing (`10-0`, `20-0`, … `500-0`), straight to Redis.
async fn lines_at_tens(app: &TestApp, job: &buildlogs::ids::JobId) {
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let mut pipe = redis::pipe();
    for i in 1..=50 {
        pipe.cmd("XADD")
            .arg(job.logs_key())
            .arg(format!("{}-0", i * 10))
            .arg("text")
            .arg(format!("t{}", i * 10))
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn around_id_centres_the_page_on_the_line_or_where_it_would_stand() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    lines_at_tens(&app, &job).await;
    let around = |id: &str, limit: u32| {
        let path = format!("/api/jobs/{job}/logs?around_id={id}&limit={limit}");
        let app = &app;
        async move { get(app, &path, "user_a").await.1 }
    };
    let t = |ids: &[u32]| ids.iter().map(|i| format!("t{i}")).collect::<Vec<_>>();

    // A retained line: itself, four before, five after.
    let page = around("250-0", 10).await;
    assert_eq!(
        texts(&page),
        t(&[210, 220, 230, 240, 250, 260, 270, 280, 290, 300])
    );
    assert_eq!(
        (&page["has_more"], &page["has_newer"]),
        (&true.into(), &true.into())
    );
    assert_eq!(
        (&page["oldest_id"], &page["newest_id"]),
        (&"210-0".into(), &"300-0".into())
    );
    // Never written, between two lines: centred where it would stand.
    let page = around("255-0", 10).await;
    assert_eq!(
        texts(&page),
        t(&[210, 220, 230, 240, 250, 260, 270, 280, 290, 300])
    );
    // At both ends a short side leaves its share to the other.
    let page = around("10-0", 5).await;
    assert_eq!(texts(&page), t(&[10, 20, 30, 40, 50]));
    assert_eq!(
        (&page["has_more"], &page["has_newer"]),
        (&false.into(), &true.into())
    );
    let page = around("500-0", 5).await;
    assert_eq!(texts(&page), t(&[460, 470, 480, 490, 500]));
    assert_eq!(
        (&page["has_more"], &page["has_newer"]),
        (&true.into(), &false.into())
    );
    // Never written, past either end.
    assert_eq!(texts(&around("5-0", 3).await), t(&[10, 20, 30]));
    assert_eq!(texts(&around("999-0", 3).await), t(&[480, 490, 500]));
    // One line: the anchor alone.
    assert_eq!(texts(&around("250-0", 1).await), t(&[250]));

    // Trimmed away: the page opens on the oldest retained lines.
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(job.logs_key())
        .arg("MAXLEN")
        .arg("=")
        .arg(40)
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = around("50-0", 4).await;
    assert_eq!(texts(&page), t(&[110, 120, 130, 140]));
    assert_eq!(
        (&page["has_more"], &page["has_newer"]),
        (&false.into(), &true.into())
    );

    // Paging out from a permalink both ways visits every retained line once.
    let start = around("300-0", 7).await;
    let mut seen = page_ids(&start);
    let mut before = start["oldest_id"].as_str().unwrap().to_owned();
    let mut more = start["has_more"] == true;
    while more {
        let (_, page) = get(
            &app,
            &format!("/api/jobs/{job}/logs?before_id={before}&limit=6"),
            "user_a",
        )
        .await;
        seen.splice(0..0, page_ids(&page));
        before = page["oldest_id"].as_str().unwrap_or_default().to_owned();
        more = page["has_more"] == true;
    }
    let mut after = start["newest_id"].as_str().unwrap().to_owned();
    let mut newer = start["has_newer"] == true;
    while newer {
        let (_, page) = get(
            &app,
            &format!("/api/jobs/{job}/logs?after_id={after}&limit=6"),
            "user_a",
        )
        .await;
        seen.extend(page_ids(&page));
        after = page["newest_id"].as_str().unwrap_or_default().to_owned();
        newer = page["has_newer"] == true;
    }
    let expected: Vec<String> = (11..=50).map(|i| format!("{}-0", i * 10)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn at_most_one_cursor() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    app.lines(&job, 3).await;
    for query in [
        "before_id=1-0&after_id=2-0",
        "after_id=1-0&around_id=2-0",
        "before_id=1-0&around_id=2-0",
        "before_id=1-0&after_id=1-0&around_id=1-0",
    ] {
        assert_problem(
            &app,
            &format!("/api/jobs/{job}/logs?{query}"),
            400,
            "invalid_cursor",
        )
        .await;
    }
    for bad in ["", "1", "a-b", "+1-1", "(1-0"] {
        for cursor in ["after_id", "around_id"] {
            assert_problem(
                &app,
                &format!("/api/jobs/{job}/logs?{cursor}={bad}"),
                400,
                "invalid_cursor",
            )
            .await;
        }
    }
    // Authentication before the cursors, the cursors before the job.
    let resp = app
        .client()
        .get(format!("/api/jobs/{job}/logs?before_id=1-0&after_id=2-0"))
        .send()
        .await;
    assert_eq!(resp.0.status(), 401);
    assert_problem(
        &app,
        "/api/jobs/nobody/logs?before_id=1-0&after_id=2-0",
        400,
        "invalid_cursor",
    )
    .await;
}
