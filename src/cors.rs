//! CORS for browsers on other origins (`CORS_ALLOWED_ORIGINS`): listed origins get the
//! `Access-Control-*` headers (credentials allowed; `Retry-After` and the download's
//! `Content-Disposition`, `Buildlogs-Last-Id` and `Buildlogs-Truncated` exposed) on `/api` responses
//! and their preflights answered; a request from any other origin is served as if CORS were
//! off, with no `Access-Control-*` headers and never an error: the browser enforces. Every
//! `/api` response says `Vary: Origin`, since what it carries depends on the origin.
//!
//! An `Origin` matches a listed origin byte for byte: `https://app.example/` is another origin
//! than `https://app.example` (a browser never sends the slash, so a request that does is not
//! a browser's). Nothing outside `/api` (`/metrics`, `/healthz`, `/readyz`, `/docs`,
//! `/openapi.json`) carries CORS headers: no other origin has any business reading those with
//! credentials.

use std::{collections::HashSet, sync::Arc};

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    http::{HeaderValue, Method, StatusCode, header},
};

/// Request headers a listed origin may send.
const ALLOW_HEADERS: &str = "authorization, last-event-id, cache-control";
const ALLOW_METHODS: &str = "GET, OPTIONS";
/// Response headers a script on a listed origin may read: a 429's or 503's delay, and what a
/// download says about itself (its file name, its last line, whether its start was trimmed).
const EXPOSE_HEADERS: &str =
    "retry-after, content-disposition, buildlogs-last-id, buildlogs-truncated";
/// How long a browser may cache a preflight, in seconds.
const MAX_AGE: &str = "600";

/// The CORS middleware, for a non-empty list of origins.
#[derive(Clone)]
pub struct Cors {
    origins: Arc<HashSet<String>>,
}

impl Cors {
    /// The listed origins, as configured (only surrounding blanks are trimmed: matching is
    /// byte for byte). An entry with a path, or a trailing slash, can match no browser, so it
    /// is reported.
    pub fn new(origins: &[String]) -> Self {
        let origins: HashSet<String> = origins
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &origins {
            let after_scheme = origin.split_once("://").map_or("", |(_, rest)| rest);
            if after_scheme.is_empty() || after_scheme.contains('/') {
                tracing::warn!(
                    origin,
                    "CORS_ALLOWED_ORIGINS entry is not an origin (scheme://host[:port], no \
                     trailing slash): no browser request will match it"
                );
            }
        }
        Self {
            origins: Arc::new(origins),
        }
    }

    /// Whether `path` is one that CORS applies to: the API's.
    fn covers(path: &str) -> bool {
        path.strip_prefix("/api")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl<E: Endpoint> Middleware<E> for Cors {
    type Output = CorsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        CorsEndpoint {
            inner,
            cors: self.clone(),
        }
    }
}

pub struct CorsEndpoint<E> {
    inner: E,
    cors: Cors,
}

impl<E: Endpoint> Endpoint for CorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        if !Cors::covers(req.uri().path()) {
            return Ok(self.inner.call(req).await?.into_response());
        }
        let allowed = req
            .headers()
            .get(header::ORIGIN)
            .filter(|o| {
                std::str::from_utf8(o.as_bytes()).is_ok_and(|o| self.cors.origins.contains(o))
            })
            .cloned();
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut resp = match (&allowed, preflight) {
            (Some(_), true) => {
                let mut resp = StatusCode::NO_CONTENT.into_response();
                let headers = resp.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(ALLOW_METHODS),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static(ALLOW_HEADERS),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static(MAX_AGE),
                );
                resp
            }
            _ => self.inner.call(req).await?.into_response(),
        };
        let headers = resp.headers_mut();
        if let Some(origin) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            if !preflight {
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(EXPOSE_HEADERS),
                );
            }
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        Ok(resp)
    }
}
