//! Authentication (contract §2): every bad-token case, cookie auth, check order, JWKS over HTTP.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use buildlogs::auth::domain_from_publishable_key;
use poem::{
    EndpointExt, Route, get, handler,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use serde_json::{Value, json};

use crate::helpers::*;

async fn status_with(
    app: &TestApp,
    path: &str,
    header: Option<(&str, String)>,
) -> (u16, Value, Option<String>) {
    let mut req = app.client().get(path);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let resp = req.send().await;
    let status = resp.0.status().as_u16();
    let www = resp
        .0
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.0.into_body().into_string().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        www,
    )
}

async fn bearer(app: &TestApp, job: &str, token: String) -> (u16, Value, Option<String>) {
    status_with(
        app,
        &format!("/api/jobs/{job}/logs"),
        Some(("Authorization", format!("Bearer {token}"))),
    )
    .await
}

async fn assert_401(app: &TestApp, job: &str, token: String, reason: &str) {
    let before = app
        .metric(&format!(
            "buildlogs_auth_failures_total{{reason=\"{reason}\"}}"
        ))
        .await;
    let (status, body, www) = bearer(app, job, token).await;
    assert_eq!(status, 401, "{reason}");
    assert_eq!(www.as_deref(), Some("Bearer"), "{reason}");
    assert_eq!(body["code"], "unauthorized", "{reason}");
    let after = app
        .metric(&format!(
            "buildlogs_auth_failures_total{{reason=\"{reason}\"}}"
        ))
        .await;
    assert_eq!(after, before + 1.0, "reason {reason} counted");
}

#[tokio::test]
async fn every_bad_token_is_a_401_with_its_reason() {
    let app = spawn_app_with(Backend::Redis, |c| {
        c.clerk_issuer = Some("https://clerk.example.test".into());
        c.clerk_authorized_parties = vec!["https://app.example.test".into()];
    })
    .await;
    let job = app.job("user_a", "code").await;
    let j = job.as_str();
    let iss = "https://clerk.example.test";
    let azp = "https://app.example.test";
    let good =
        json!({"sub": "user_a", "exp": now() + 600, "nbf": now() - 1, "iss": iss, "azp": azp});

    let (status, _, _) = bearer(&app, j, token_with(good.clone())).await;
    assert_eq!(status, 200, "the baseline token is accepted");

    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    // A tampered payload keeps the header, loses the signature.
    let real = token_with(good.clone());
    let mut parts: Vec<&str> = real.split('.').collect();
    let forged = b64(&with(json!({"sub": "user_b"})));
    parts[1] = &forged;
    let tampered = parts.join(".");
    // iat, when present, is a NumericDate like exp and nbf.
    assert!(good.get("iat").is_none());
    let (status, _, _) = bearer(&app, j, token_with(with(json!({"iat": now() - 1})))).await;
    assert_eq!(status, 200, "a plain iat is fine");

    // Each bad token, and the reason it is counted under.
    let claims = |patch: Value| token_with(with(patch));
    let evil = "https://evil.example.test";
    let not_json = format!("{}.e30.", URL_SAFE_NO_PAD.encode("not json"));
    let cases: Vec<(String, &str)> = vec![
        (claims(json!({"exp": now() - 60})), "expired"),
        (claims(json!({"nbf": now() + 120})), "not_yet_valid"),
        (claims(json!({"iss": evil})), "wrong_issuer"),
        (claims(json!({"iss": null})), "wrong_issuer"),
        (claims(json!({"azp": evil})), "wrong_party"),
        (claims(json!({"azp": null})), "wrong_party"),
        (claims(json!({"sub": null})), "malformed"),
        (claims(json!({"exp": null})), "malformed"),
        (claims(json!({"iat": "x"})), "malformed"),
        (claims(json!({"iat": 1e308})), "malformed"),
        (keys().other_signer.sign(&good), "bad_signature"),
        (none_token(&good), "bad_alg"),
        (hs256_with_public_key(&good), "bad_alg"),
        ("garbage".into(), "malformed"),
        ("a.b.c".into(), "malformed"),
        (not_json, "malformed"),
        ("x".repeat(20_000), "malformed"),
        (tampered, "bad_signature"),
    ];
    for (token, reason) in cases {
        assert_401(&app, j, token, reason).await;
    }

    // No credentials at all, an empty bearer, another scheme.
    let path = format!("/api/jobs/{j}/logs");
    for header in [
        None,
        Some(("Authorization", "Bearer ".to_owned())),
        Some(("Authorization", "Basic dXNlcjpwYXNz".to_owned())),
    ] {
        let (status, body, www) = status_with(&app, &path, header).await;
        assert_eq!((status, www.as_deref()), (401, Some("Bearer")));
        assert_eq!(body["code"], "unauthorized");
    }
    assert!(
        app.metric("buildlogs_auth_failures_total{reason=\"missing\"}")
            .await
            >= 3.0
    );

    // Two Authorization headers, on the wire: malformed, even when both carry a good token.
    let malformed = "buildlogs_auth_failures_total{reason=\"malformed\"}";
    let before = app.metric(malformed).await;
    for second in [
        format!("Bearer {}", token("user_a")),
        "Basic dXNlcjpwYXNz".into(),
    ] {
        let resp = app
            .http
            .get(app.url(&path))
            .header("Authorization", format!("Bearer {}", token("user_a")))
            .header("Authorization", second)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    assert_eq!(app.metric(malformed).await, before + 2.0);
}

#[tokio::test]
async fn leeway_is_five_seconds() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let (ok, _, _) = bearer(
        &app,
        job.as_str(),
        token_with(json!({"sub": "user_a", "exp": now() - 2})),
    )
    .await;
    assert_eq!(ok, 200, "2 s past exp is within the leeway");
    let (late, _, _) = bearer(
        &app,
        job.as_str(),
        token_with(json!({"sub": "user_a", "exp": now() - 30})),
    )
    .await;
    assert_eq!(late, 401);
}

#[tokio::test]
async fn cookie_auth_and_header_precedence() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let path = format!("/api/jobs/{job}/logs");
    let cookie = |t: String| ("Cookie", format!("theme=dark; __session={t}; other=1"));

    let (status, _, _) = status_with(&app, &path, Some(cookie(token("user_a")))).await;
    assert_eq!(status, 200, "the __session cookie authenticates");

    // A Basic header is ignored as if absent: the cookie is used.
    let resp = app
        .client()
        .get(&path)
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .header("Cookie", format!("__session={}", token("user_a")))
        .send()
        .await;
    assert_eq!(resp.0.status(), 200);

    // A Bearer header wins over a valid cookie, even when the header's token is bad.
    let resp = app
        .client()
        .get(&path)
        .header("Authorization", "Bearer garbage")
        .header("Cookie", format!("__session={}", token("user_a")))
        .send()
        .await;
    assert_eq!(resp.0.status(), 401);
    // ... and a good Bearer header for another user is that user (404), not the cookie's.
    let resp = app
        .client()
        .get(&path)
        .header("Authorization", format!("Bearer {}", token("user_b")))
        .header("Cookie", format!("__session={}", token("user_a")))
        .send()
        .await;
    assert_eq!(resp.0.status(), 404);

    // Never the query string.
    let (status, _, _) = status_with(
        &app,
        &format!(
            "{path}?token={}&__session={}",
            token("user_a"),
            token("user_a")
        ),
        None,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn authentication_comes_before_validation_and_ownership() {
    let app = spawn_app().await;
    for path in [
        "/api/jobs/%2A/logs",
        "/api/jobs/ok/logs?limit=0",
        "/api/jobs/ok/logs?before_id=x",
        "/api/jobs/nope/logs",
        "/api/jobs/a:b/logs/stream",
    ] {
        let (status, body, _) = status_with(&app, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["code"], "unauthorized");
    }
    // With a bad Last-Event-ID too.
    let resp = app
        .client()
        .get("/api/jobs/nope/logs/stream")
        .header("Last-Event-ID", "zzz")
        .send()
        .await;
    assert_eq!(resp.0.status(), 401);
    // Authenticated: 400 beats 404.
    let resp = app
        .client()
        .get("/api/jobs/nope/logs/stream")
        .header("Authorization", format!("Bearer {}", token("user_a")))
        .header("Last-Event-ID", "zzz")
        .send()
        .await;
    assert_eq!(resp.0.status(), 400);
}

#[test]
fn publishable_key_carries_the_frontend_api_domain() {
    let key = format!(
        "pk_test_{}",
        base64::engine::general_purpose::STANDARD.encode("clerk.example.test$")
    );
    assert_eq!(
        domain_from_publishable_key(&key).unwrap(),
        "clerk.example.test"
    );
    let live = format!(
        "pk_live_{}",
        base64::engine::general_purpose::STANDARD.encode("clerk.example.com$")
    );
    assert_eq!(
        domain_from_publishable_key(&live).unwrap(),
        "clerk.example.com"
    );
    for bad in [
        "sk_test_abc",
        "pk_test_!!!",
        &format!(
            "pk_test_{}",
            base64::engine::general_purpose::STANDARD.encode("no-dollar")
        ),
    ] {
        assert!(domain_from_publishable_key(bad).is_err(), "{bad}");
    }
    // The derivation, as the app configures itself.
    let config = buildlogs::Config {
        clerk_publishable_key: Some(key),
        ..buildlogs::Config::default()
    };
    let settings = buildlogs::auth::AuthSettings::from_config(&config).unwrap();
    assert_eq!(
        settings.jwks_url.as_deref(),
        Some("https://clerk.example.test/.well-known/jwks.json")
    );
    assert_eq!(
        settings.issuer.as_deref(),
        Some("https://clerk.example.test")
    );
}

/// A JWKS endpoint on loopback whose keys the test can change, counting fetches.
struct Jwks {
    url: String,
    keys: Arc<std::sync::Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

fn jwk(public_pem: &str, kid: &str) -> Value {
    use rsa::{pkcs8::DecodePublicKey, traits::PublicKeyParts};
    let key = rsa::RsaPublicKey::from_public_key_pem(public_pem).unwrap();
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

#[handler]
fn serve_jwks(
    keys: Data<&Arc<std::sync::Mutex<Value>>>,
    fetches: Data<&Arc<AtomicUsize>>,
) -> poem::Response {
    fetches.fetch_add(1, Ordering::SeqCst);
    let body = keys.lock().unwrap().clone();
    if let Some(status) = body.as_u64() {
        // Outage mode: this status, no keys.
        return poem::Response::builder()
            .status(poem::http::StatusCode::from_u16(status as u16).unwrap())
            .body("down");
    }
    if body.is_string() {
        // Garbage mode.
        return poem::Response::builder().body(body.as_str().unwrap().to_owned());
    }
    poem::Response::builder()
        .content_type("application/json")
        .body(body.to_string())
}

async fn jwks_server(initial: Value) -> Jwks {
    let keys = Arc::new(std::sync::Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    let app = Route::new()
        .at("/.well-known/jwks.json", get(serve_jwks))
        .data(keys.clone())
        .data(fetches.clone());
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    Jwks {
        url: format!("http://{addr}/.well-known/jwks.json"),
        keys,
        fetches,
        _server: server,
    }
}

#[tokio::test]
async fn jwks_rotation_without_restart_or_refetch_storm() {
    let jwks = jwks_server(json!({"keys": [jwk(&keys().public_pem, "kid-1")]})).await;
    let url = jwks.url.clone();
    let app = spawn_app_with(Backend::Redis, move |c| {
        c.clerk_jwt_key = None;
        c.clerk_jwks_url = Some(url);
    })
    .await;
    let job = app.job("user_a", "code").await;
    let path = format!("/api/jobs/{job}/logs");
    let signed = |kid: &str, other: bool| {
        let pem = if other {
            other_private()
        } else {
            keys().private_pem.clone()
        };
        let signer = buildlogs::dev::Signer::from_pem(&pem, Some(kid)).unwrap();
        signer.sign(&json!({"sub": "user_a", "exp": now() + 600}))
    };

    let (status, _, _) = status_with(
        &app,
        &path,
        Some((
            "Authorization",
            format!("Bearer {}", signed("kid-1", false)),
        )),
    )
    .await;
    assert_eq!(status, 200, "key from the JWKS");

    // Unknown kids: the start-up fetch was just now, so no refetch happens for any of them.
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    for i in 0..20 {
        let (status, _, _) = status_with(
            &app,
            &path,
            Some((
                "Authorization",
                format!("Bearer {}", signed(&format!("kid-x{i}"), false)),
            )),
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        fetched,
        "no refetch storm inside the window"
    );
    assert!(
        app.metric("buildlogs_auth_failures_total{reason=\"unknown_kid\"}")
            .await
            >= 20.0
    );
    drop(app);

    // Rotation: a fresh app whose first fetch saw only kid-1; the JWKS then gains kid-2 and drops
    // kid-1. Outside the 60 s window (a new app: its window starts at its own first fetch, which
    // we make fail by serving garbage first) the unknown kid triggers exactly one refetch.
    *jwks.keys.lock().unwrap() = json!("not json at all");
    let url = jwks.url.clone();
    let app = spawn_app_with(Backend::Redis, move |c| {
        c.clerk_jwt_key = None;
        c.clerk_jwks_url = Some(url);
    })
    .await;
    let job = app.job("user_a", "code").await;
    let path = format!("/api/jobs/{job}/logs");
    let (status, body, _) = status_with(
        &app,
        &path,
        Some(("Authorization", format!("Bearer {}", signed("kid-2", true)))),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "garbage JWKS is a 401, never a 500"
    );
    assert!(
        app.metric("buildlogs_auth_failures_total{reason=\"no_key\"}")
            .await
            >= 1.0
    );

    *jwks.keys.lock().unwrap() = json!({"keys": [jwk(&other_public(), "kid-2")]});
    // The failed fetch backs off for 5 s; then one request refetches and succeeds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = status_with(
            &app,
            &path,
            Some(("Authorization", format!("Bearer {}", signed("kid-2", true)))),
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotated key never accepted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _, _) = status_with(
        &app,
        &path,
        Some((
            "Authorization",
            format!("Bearer {}", signed("kid-1", false)),
        )),
    )
    .await;
    assert_eq!(status, 401, "the removed key no longer verifies");
}

#[tokio::test]
async fn a_pem_key_and_a_jwks_together_follow_a_key_rotation_without_restart() {
    // The JWKS is down at start; the PEM key (CLERK_JWT_KEY) verifies meanwhile.
    let jwks = jwks_server(json!(503)).await;
    let url = jwks.url.clone();
    let app = spawn_app_with(Backend::Redis, move |c| {
        c.clerk_jwt_key = Some(keys().public_pem.clone());
        c.clerk_jwks_url = Some(url);
    })
    .await;
    let job = app.job("user_a", "code").await;
    let path = format!("/api/jobs/{job}/logs");
    let bearer_status = |token: String| {
        let app = &app;
        let path = path.clone();
        async move {
            status_with(
                app,
                &path,
                Some(("Authorization", format!("Bearer {token}"))),
            )
            .await
            .0
        }
    };
    assert_eq!(
        bearer_status(token("user_a")).await,
        200,
        "the PEM key verifies"
    );

    // Clerk rotates: the JWKS now publishes a new key under a new kid. A token under it is
    // rejected by the PEM key; its kid makes the JWKS be fetched again (the failed start-up
    // fetch was no fetch), and within a few seconds it verifies, with no restart.
    *jwks.keys.lock().unwrap() = json!({"keys": [jwk(&other_public(), "kid-rotated")]});
    let rotated = buildlogs::dev::Signer::from_pem(&other_private(), Some("kid-rotated"))
        .unwrap()
        .sign(&json!({"sub": "user_a", "exp": now() + 600}));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if bearer_status(rotated.clone()).await == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a token under the rotated key never verified"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The PEM key still verifies its own tokens; a stranger's key under a new kid does not.
    assert_eq!(bearer_status(token("user_a")).await, 200);
    let stranger = keys()
        .other_signer
        .sign(&json!({"sub": "user_a", "exp": now() + 600}));
    assert_eq!(bearer_status(stranger).await, 401);
}

#[tokio::test]
async fn unreachable_jwks_is_401_not_500_and_startup_survives() {
    let app = spawn_app_with(Backend::Redis, |c| {
        c.clerk_jwt_key = None;
        c.clerk_jwks_url = Some("http://127.0.0.1:9/.well-known/jwks.json".into());
    })
    .await;
    let job = app.job("user_a", "code").await;
    let (status, body, _) = bearer(&app, job.as_str(), token("user_a")).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    assert!(
        app.metric("buildlogs_auth_failures_total{reason=\"no_key\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn cached_key_keeps_serving_through_a_jwks_outage() {
    let mut jwks = jwks_server(json!({"keys": [jwk(&keys().public_pem, "kid-1")]})).await;
    let url = jwks.url.clone();
    let app = spawn_app_with(Backend::Redis, move |c| {
        c.clerk_jwt_key = None;
        c.clerk_jwks_url = Some(url);
    })
    .await;
    let job = app.job("user_a", "code").await;
    let signer = buildlogs::dev::Signer::from_pem(&keys().private_pem, Some("kid-1")).unwrap();
    let tok = signer.sign(&json!({"sub": "user_a", "exp": now() + 600}));
    let (status, _, _) = bearer(&app, job.as_str(), tok.clone()).await;
    assert_eq!(status, 200);
    jwks._server.abort();
    let _ = (&mut jwks._server).await;
    let (status, _, _) = bearer(&app, job.as_str(), tok).await;
    assert_eq!(status, 200, "cached key still verifies with the JWKS down");
}

fn other_keys() -> &'static (String, String) {
    static OTHER: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    OTHER.get_or_init(|| buildlogs::dev::generate_rsa_pem().unwrap())
}
fn other_private() -> String {
    other_keys().0.clone()
}
fn other_public() -> String {
    other_keys().1.clone()
}

#[tokio::test]
async fn misconfiguration_refuses_to_start() {
    let no_key = buildlogs::App::build(buildlogs::Config::default()).await;
    let err = no_key.err().expect("no Clerk key: refuses").to_string();
    assert!(
        err.contains("CLERK_PUBLISHABLE_KEY") && err.contains("--dev"),
        "{err}"
    );
    let bad_pem = buildlogs::App::build(buildlogs::Config {
        clerk_jwt_key: Some("not a pem".into()),
        ..buildlogs::Config::default()
    })
    .await;
    assert!(bad_pem.is_err());
    let remote_http = buildlogs::App::build(buildlogs::Config {
        clerk_jwks_url: Some("http://example.test/jwks.json".into()),
        ..buildlogs::Config::default()
    })
    .await;
    assert!(remote_http.is_err(), "plain HTTP JWKS only on loopback");
}
