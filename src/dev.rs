//! `serve --dev`: a local try-out with no Redis and no Clerk account.
//!
//! A throwaway RSA key is generated at start and is the only key the server trusts; a token for
//! the demo user `user_dev` is printed with the URLs to open. Demo jobs owned by `user_dev`
//! produce realistic build output through [`LogWriter`] (the runner's exact format, into
//! whichever store is configured) and then turn `ready`; a new one starts every
//! `DEV_JOB_EVERY_SECS`, so a late viewer still has something live to watch.
//!
//! The example viewer (`clients/react/example`, `<BuildLog>` from `@buildlogs/react`) is served
//! at `/viewer/` in dev mode only, from files built into `assets/viewer/` and embedded in the
//! binary; its token comes from `/viewer/token`, a route that exists only here.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::{
    Body, EndpointExt, IntoResponse, Request, Response, Route, get, handler,
    http::header,
    web::{Data, Redirect},
};
use rand::{Rng, SeedableRng};
use rsa::{
    RsaPrivateKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding},
};

use crate::{
    config::Config,
    ids::JobId,
    runner_format::{LogWriter, Source},
    viewer::StreamContext,
};

pub const DEV_USER: &str = "user_dev";
/// How long the printed token is good for.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a viewer token is good for: as long as a Clerk session token, so that the viewer
/// renews its tokens the way an app does.
pub const VIEWER_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The example viewer, built by `npm run build:viewer` in `clients/react` (CI checks that these
/// match their sources). Static bytes: every response shares them.
const VIEWER_HTML: &[u8] = include_bytes!("../assets/viewer/index.html");
const VIEWER_JS: &[u8] = include_bytes!("../assets/viewer/viewer.js");
/// The viewer runs no inline script and loads nothing from elsewhere; React puts the component's
/// stylesheet in a `<style>` element.
const VIEWER_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                          style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                          base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Signs RS256 session tokens with a private key.
pub struct Signer {
    key: EncodingKey,
    kid: Option<String>,
}

impl Signer {
    pub fn from_pem(private_pem: &str, kid: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            key: EncodingKey::from_rsa_pem(private_pem.as_bytes())?,
            kid: kid.map(str::to_owned),
        })
    }

    /// Signs arbitrary claims.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).expect("RS256 signing with a valid key")
    }

    /// A session token for `user` valid for `ttl`, shaped like Clerk's.
    pub fn session_token(&self, user: &str, ttl: Duration) -> (String, u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp = now + ttl.as_secs();
        let token = self.sign(&serde_json::json!({
            "sub": user, "iat": now, "nbf": now, "exp": exp, "sid": "sess_dev",
        }));
        (token, exp)
    }
}

/// A fresh RSA key pair: (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_rsa_pem() -> anyhow::Result<(String, String)> {
    let private =
        RsaPrivateKey::new(&mut rand::thread_rng(), 2048).context("generating an RSA key")?;
    let private_pem = private.to_pkcs8_pem(LineEnding::LF)?.to_string();
    let public_pem = private.to_public_key().to_public_key_pem(LineEnding::LF)?;
    Ok((private_pem, public_pem))
}

/// What `--dev` needs between configuration and start.
pub struct DevKit {
    signer: Arc<Signer>,
    demo_secs: u64,
    every: Duration,
}

impl DevKit {
    /// Generates the throwaway key and makes it the configured verification key.
    pub fn prepare(config: &mut Config) -> anyhow::Result<Self> {
        if config.has_clerk_key() {
            anyhow::bail!(
                "--dev generates its own signing key and never combines with a Clerk key: unset \
                 CLERK_PUBLISHABLE_KEY, CLERK_JWT_KEY and CLERK_JWKS_URL, or drop --dev"
            );
        }
        let (private_pem, public_pem) = generate_rsa_pem()?;
        config.clerk_jwt_key = Some(public_pem);
        config.clerk_issuer = None;
        config.clerk_authorized_parties.clear();
        Ok(Self {
            signer: Arc::new(Signer::from_pem(&private_pem, Some("dev"))?),
            demo_secs: config.dev_demo_secs.max(1),
            every: Duration::from_secs(config.dev_job_every_secs.max(1)),
        })
    }

    /// The example viewer's routes, to mount at `/viewer` (dev mode only).
    pub fn viewer(&self) -> Viewer {
        Viewer {
            signer: self.signer.clone(),
        }
    }

    /// Prints the token and URLs, and starts the demo jobs.
    pub async fn start(self, streams: &StreamContext, addr: SocketAddr) -> anyhow::Result<()> {
        let (token, exp) = self.signer.session_token(DEV_USER, DEV_TOKEN_TTL);
        let expires = time::OffsetDateTime::from_unix_timestamp(exp as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| exp.to_string());
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let base = format!("http://{host}");
        let writer = LogWriter::new(streams.store.clone());
        let first = JobId::parse("demo-1").expect("valid literal");
        // Create the first job before printing, so the printed commands work at once.
        writer.create_job(&first, DEV_USER, "queued").await?;

        println!(
            "\n\
             buildlogs is running in dev mode: a throwaway signing key and demo jobs for `{DEV_USER}`.\n\
             Nothing here is for production; restart and the key (and this token) are gone.\n\n\
             Token for {DEV_USER} (expires {expires}):\n\
             TOKEN={token}\n\n\
             Swagger UI: {base}/docs  (click Authorize, paste the token into BearerAuth)\n\n\
             Viewer: {base}/viewer/?job=demo-1  (<BuildLog> from @buildlogs/react; any job: ?job=<id>)\n\n\
             Follow the demo job live (a new demo job, demo-2, demo-3, …, starts every {every}s):\n\
             curl -N -H \"Authorization: Bearer $TOKEN\" {base}/api/jobs/demo-1/logs/stream\n\n\
             Its history:\n\
             curl -H \"Authorization: Bearer $TOKEN\" \"{base}/api/jobs/demo-1/logs?limit=20\"\n\n\
             Download the whole log as demo-1.log (colour codes stripped), and search it:\n\
             curl -OJ -H \"Authorization: Bearer $TOKEN\" \"{base}/api/jobs/demo-1/logs/raw?ansi=strip\"\n\
             curl -H \"Authorization: Bearer $TOKEN\" \"{base}/api/jobs/demo-1/logs/search?q=FAIL\"\n",
            every = self.every.as_secs(),
        );

        let shutdown = streams.shutdown.clone();
        let demo_secs = self.demo_secs;
        let every = self.every;
        tokio::spawn(async move {
            let mut n = 1u64;
            let mut job = first;
            loop {
                let started = tokio::time::Instant::now();
                let run = run_demo_job(&writer, &job, demo_secs);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    result = run => if let Err(err) = result {
                        tracing::warn!(error = %err, job = %job, "demo job failed");
                    },
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(started + every) => {}
                }
                n += 1;
                job = JobId::parse(&format!("demo-{n}")).expect("valid id");
                if let Err(err) = writer.create_job(&job, DEV_USER, "queued").await {
                    tracing::warn!(error = %err, "creating a demo job failed");
                }
            }
        });
        Ok(())
    }
}

/// The example viewer at `/viewer/`: its page, its script and the token it follows jobs with.
pub struct Viewer {
    signer: Arc<Signer>,
}

impl Viewer {
    /// `/` (the page), `/viewer.js` and `/token`, to nest under `/viewer`.
    pub fn routes(&self) -> Route {
        Route::new()
            .at("/", get(viewer_page))
            .at("/viewer.js", get(viewer_script))
            .at("/token", get(viewer_token.data(self.signer.clone())))
    }
}

fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, VIEWER_CSP)
        .body(Body::from_bytes(Bytes::from_static(bytes)))
}

#[handler]
fn viewer_page(req: &Request) -> Response {
    let uri = req.original_uri();
    if !uri.path().ends_with('/') {
        // `/viewer` without its slash would resolve `./viewer.js` against `/`.
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        return Redirect::permanent(format!("{}/{query}", uri.path())).into_response();
    }
    asset(VIEWER_HTML, "text/html; charset=utf-8")
}

#[handler]
fn viewer_script() -> Response {
    asset(VIEWER_JS, "text/javascript; charset=utf-8")
}

/// A fresh session token for the demo user, shaped like Clerk's (`exp` 60 s ahead).
#[handler]
fn viewer_token(signer: Data<&Arc<Signer>>) -> Response {
    let (token, exp) = signer.session_token(DEV_USER, VIEWER_TOKEN_TTL);
    serde_json::json!({ "token": token, "expires_at": exp })
        .to_string()
        .with_content_type("application/json")
        .with_header(header::CACHE_CONTROL, "no-store")
        .into_response()
}

/// ANSI colours, as compilers and test runners print them (the runner strips them; other
/// writers do not).
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// Synthetic build output: install, build, test, then `ready`; about 15 lines a second, with
/// colours, and one test that fails before it passes on a retry.
async fn run_demo_job(writer: &LogWriter, job: &JobId, secs: u64) -> anyhow::Result<()> {
    let total = (secs * 15).max(12) as usize;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let packages = [
        "react",
        "react-dom",
        "vite",
        "typescript",
        "zod",
        "tailwindcss",
        "postcss",
        "esbuild",
        "@types/node",
        "eslint",
        "vitest",
        "date-fns",
    ];
    let modules = [
        "src/main.tsx",
        "src/App.tsx",
        "src/api/client.ts",
        "src/components/LogView.tsx",
        "src/hooks/useJob.ts",
    ];
    let phases = [("install", "deps"), ("build", "code"), ("test", "checks")];
    writer
        .set_status(job, "starting", "Preparing the workspace")
        .await?;
    writer
        .append(
            job,
            Source::System,
            "scaffold",
            &format!("Starting job {job}"),
        )
        .await?;
    let per_phase = total / phases.len();
    for (i, (phase, status)) in phases.iter().enumerate() {
        writer
            .set_status(job, status, &format!("Running {phase}"))
            .await?;
        writer
            .append(job, Source::System, phase, &format!("==> {phase}"))
            .await?;
        for step in 0..per_phase {
            let (source, text) = match *phase {
                "install" => {
                    let pkg = packages[rng.gen_range(0..packages.len())];
                    if step % 9 == 4 {
                        (
                            Source::Stderr,
                            format!(
                                "npm WARN deprecated {pkg}@{}.{}.0: use a newer release",
                                rng.gen_range(1..9),
                                rng.gen_range(0..20)
                            ),
                        )
                    } else {
                        (
                            Source::Stdout,
                            format!(
                                "added {pkg}@{}.{}.{} ({} ms)",
                                rng.gen_range(1..19),
                                rng.gen_range(0..30),
                                rng.gen_range(0..9),
                                rng.gen_range(3..400)
                            ),
                        )
                    }
                }
                "build" => {
                    let module = modules[step % modules.len()];
                    if step % 11 == 7 {
                        (
                            Source::Stderr,
                            format!(
                                "{YELLOW}warning{RESET}: {module}:{}:{} 'value' is declared but never read",
                                rng.gen_range(1..200),
                                rng.gen_range(1..40)
                            ),
                        )
                    } else {
                        (
                            Source::Stdout,
                            format!(
                                "transforming {module} ({} modules, {} kB)",
                                rng.gen_range(10..900),
                                rng.gen_range(1..300)
                            ),
                        )
                    }
                }
                _ if step == per_phase / 2 => {
                    let module = modules[step % modules.len()];
                    for (source, text) in [
                        (
                            Source::Stdout,
                            format!(" {RED}✗ FAIL{RESET} test {}/{per_phase} {module}", step + 1),
                        ),
                        (
                            Source::Stderr,
                            "   AssertionError: expected 200 to equal 404".to_owned(),
                        ),
                        (Source::Stderr, format!("     at {module}:42:17")),
                        (Source::Stdout, format!("   retrying {module} (1 of 2)")),
                    ] {
                        writer.append(job, source, phase, &text).await?;
                    }
                    (
                        Source::Stdout,
                        format!(
                            " {GREEN}✓{RESET} test {}/{per_phase} {module} passed on retry",
                            step + 1
                        ),
                    )
                }
                _ => (
                    Source::Stdout,
                    format!(
                        " {GREEN}✓{RESET} test {}/{} {} ({} ms)",
                        step + 1,
                        per_phase,
                        modules[step % modules.len()],
                        rng.gen_range(1..90)
                    ),
                ),
            };
            writer.append(job, source, phase, &text).await?;
            tokio::time::sleep(Duration::from_millis(if i == 0 { 50 } else { 70 })).await;
        }
    }
    writer
        .append(
            job,
            Source::System,
            "dev_server",
            "Build finished: ready at http://localhost:5173",
        )
        .await?;
    writer.set_status(job, "ready", "Build succeeded").await?;
    Ok(())
}
