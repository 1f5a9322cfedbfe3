//! Authentication: Clerk session tokens (RS256 JWTs) from a Bearer header or the `__session`
//! cookie, verified against a PEM key and/or a cached JWKS (contract §2).
//!
//! [`Session`] is the extractor every `/api` operation takes first, so a failed authentication
//! (401) always beats a bad parameter (400) and a missing job (404).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use poem::{Request, RequestBody, http::header};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme, auth::ApiKey,
    registry::Registry,
};
use serde::Deserialize;

use crate::{config::Config, error::ApiError, telemetry::AuthFailureReason};

/// Tokens longer than this are refused unread (a Clerk session token is about 1 KB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// An unknown `kid` refetches the JWKS at most this often.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed JWKS fetch, the next attempt waits this long.
const JWKS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A verified token is remembered this long (never past its `exp` + leeway), so a client paging
/// history or reconnecting with the same token costs no RSA verification.
const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most tokens remembered at once; the cache starts over when full.
const VERIFIED_CACHE_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("CLERK_PUBLISHABLE_KEY is not a Clerk publishable key (pk_test_… or pk_live_…)")]
    BadPublishableKey,
    #[error("CLERK_JWT_KEY is not a PEM RSA public key: {0}")]
    BadPem(String),
    #[error("CLERK_JWKS_URL must be https://, or http:// on loopback: {0}")]
    BadJwksUrl(String),
}

/// The instance domain a Clerk publishable key carries (`pk_test_<base64("domain$")>`).
pub fn domain_from_publishable_key(key: &str) -> Result<String, AuthConfigError> {
    let encoded = key
        .strip_prefix("pk_test_")
        .or_else(|| key.strip_prefix("pk_live_"))
        .ok_or(AuthConfigError::BadPublishableKey)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('='))
        })
        .map_err(|_| AuthConfigError::BadPublishableKey)?;
    let text = String::from_utf8(decoded).map_err(|_| AuthConfigError::BadPublishableKey)?;
    let domain = text
        .strip_suffix('$')
        .ok_or(AuthConfigError::BadPublishableKey)?;
    let valid = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if valid {
        Ok(domain.to_owned())
    } else {
        Err(AuthConfigError::BadPublishableKey)
    }
}

/// Where keys come from and what a token must say, resolved from the configuration.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    pub pem: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub authorized_parties: Vec<String>,
    pub leeway_secs: u64,
}

impl AuthSettings {
    pub fn from_config(config: &Config) -> Result<Self, AuthConfigError> {
        let derived = config
            .clerk_publishable_key
            .as_deref()
            .map(domain_from_publishable_key)
            .transpose()?;
        Ok(Self {
            pem: config
                .clerk_jwt_key
                .as_ref()
                .map(|k| k.replace("\\n", "\n")),
            jwks_url: config.clerk_jwks_url.clone().or_else(|| {
                derived
                    .as_ref()
                    .map(|d| format!("https://{d}/.well-known/jwks.json"))
            }),
            issuer: config
                .clerk_issuer
                .clone()
                .or_else(|| derived.map(|d| format!("https://{d}"))),
            authorized_parties: config
                .clerk_authorized_parties
                .iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            leeway_secs: config.jwt_leeway_secs,
        })
    }
}

/// A verified session: who is asking, and until when the token is good.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    /// `exp` plus the leeway: a stream must end by then.
    pub valid_until: SystemTime,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    azp: Option<String>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched: bool,
    next_fetch_allowed: Option<Instant>,
}

/// Verifies session tokens. Shared by every request; the JWKS cache is refreshed in place.
pub struct Verifier {
    settings: AuthSettings,
    pem_key: Option<Arc<DecodingKey>>,
    jwks: RwLock<JwksState>,
    /// Serialises JWKS fetches, so a burst of unknown kids makes one request.
    fetch_lock: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    /// Recently verified tokens and until when they may be trusted without verifying again.
    verified: std::sync::Mutex<HashMap<String, (Session, Instant)>>,
}

impl Verifier {
    pub fn new(settings: AuthSettings) -> Result<Self, AuthConfigError> {
        let pem_key = settings
            .pem
            .as_deref()
            .map(|pem| {
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| AuthConfigError::BadPem(e.to_string()))
            })
            .transpose()?
            .map(Arc::new);
        if let Some(url) = &settings.jwks_url {
            let parsed =
                reqwest::Url::parse(url).map_err(|e| AuthConfigError::BadJwksUrl(e.to_string()))?;
            let loopback = matches!(
                parsed.host_str(),
                Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
            );
            if !(parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback)) {
                return Err(AuthConfigError::BadJwksUrl(url.clone()));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .expect("a TLS backend is compiled in");
        Ok(Self {
            settings,
            pem_key,
            jwks: RwLock::default(),
            fetch_lock: tokio::sync::Mutex::new(()),
            http,
            verified: std::sync::Mutex::default(),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Fetches the JWKS once at start-up (failures are logged; requests will retry).
    pub async fn warm_up(&self) {
        if self.settings.jwks_url.is_some() {
            self.refresh_jwks(true).await;
        }
    }

    /// Fetches the JWKS unless a fetch is not allowed yet. Returns whether keys were replaced.
    async fn refresh_jwks(&self, force: bool) -> bool {
        let Some(url) = self.settings.jwks_url.as_deref() else {
            return false;
        };
        let _guard = self.fetch_lock.lock().await;
        let now = Instant::now();
        if !force {
            let state = self.jwks.read().unwrap_or_else(|p| p.into_inner());
            if state.next_fetch_allowed.is_some_and(|at| now < at) {
                return false;
            }
        }
        let result = async {
            let resp = self.http.get(url).send().await?.error_for_status()?;
            resp.json::<jsonwebtoken::jwk::JwkSet>().await
        }
        .await;
        let mut state = self.jwks.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                let mut keys = HashMap::new();
                for jwk in &set.keys {
                    let (Some(kid), Ok(key)) =
                        (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
                    else {
                        continue;
                    };
                    keys.insert(kid, Arc::new(key));
                }
                tracing::info!(keys = keys.len(), "fetched JWKS");
                state.keys = keys;
                state.fetched = true;
                state.next_fetch_allowed = Some(now + JWKS_REFRESH_INTERVAL);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, url, "JWKS fetch failed");
                state.next_fetch_allowed = Some(now + JWKS_RETRY_AFTER_FAILURE);
                false
            }
        }
    }

    fn cached_key(&self, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        let state = self.jwks.read().unwrap_or_else(|p| p.into_inner());
        match kid {
            Some(kid) => state.keys.get(kid).cloned(),
            None if state.keys.len() == 1 => state.keys.values().next().cloned(),
            None => None,
        }
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, AuthFailureReason> {
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        // A PEM key verifies whatever the JWKS does not know.
        if let Some(key) = &self.pem_key {
            return Ok(key.clone());
        }
        if self.settings.jwks_url.is_none() {
            return Err(AuthFailureReason::no_key);
        }
        // Whether or not this call fetched, a concurrent fetch may have brought the key.
        self.refresh_jwks(false).await;
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let fetched = self.jwks.read().unwrap_or_else(|p| p.into_inner()).fetched;
        Err(if fetched {
            AuthFailureReason::unknown_kid
        } else {
            AuthFailureReason::no_key
        })
    }

    /// Verifies a token (contract §2), or says why not.
    pub async fn verify(&self, token: &str) -> Result<Session, AuthFailureReason> {
        if let Some(session) = self.recently_verified(token) {
            return Ok(session);
        }
        let session = self.verify_uncached(token).await?;
        let now = Instant::now();
        let remaining = session
            .valid_until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CACHE_MAX {
            verified.clear();
        }
        verified.insert(
            token.to_owned(),
            (session.clone(), now + remaining.min(VERIFIED_CACHE_TTL)),
        );
        Ok(session)
    }

    fn recently_verified(&self, token: &str) -> Option<Session> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let (session, until) = verified.get(token)?;
        (Instant::now() < *until && SystemTime::now() < session.valid_until)
            .then(|| session.clone())
    }

    async fn verify_uncached(&self, token: &str) -> Result<Session, AuthFailureReason> {
        use AuthFailureReason as R;
        if token.is_empty() {
            return Err(R::missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(R::malformed);
        }
        let mut parts = token.split('.');
        let header = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(h), Some(_), Some(_), None) => h,
            _ => return Err(R::malformed),
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(R::malformed)?;
        if header.alg.as_deref() != Some("RS256") {
            return Err(R::bad_alg);
        }
        let key = self.key_for(header.kid.as_deref()).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clerk session tokens carry no `aud` unless a custom template adds one; we check none.
        validation.validate_aud = false;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);

        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|err| {
                match err.kind() {
                    ErrorKind::InvalidSignature => R::bad_signature,
                    ErrorKind::ExpiredSignature => R::expired,
                    ErrorKind::ImmatureSignature => R::not_yet_valid,
                    ErrorKind::InvalidIssuer => R::wrong_issuer,
                    ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => R::wrong_issuer,
                    ErrorKind::InvalidAlgorithm => R::bad_alg,
                    _ => R::malformed,
                }
            })?;
        let claims = data.claims;
        let (Some(sub), Some(exp)) = (claims.sub.filter(|s| !s.is_empty()), claims.exp) else {
            return Err(R::malformed);
        };
        if !self.settings.authorized_parties.is_empty() {
            match &claims.azp {
                Some(azp) if self.settings.authorized_parties.iter().any(|p| p == azp) => {}
                _ => return Err(R::wrong_party),
            }
        }
        Ok(Session {
            user_id: sub,
            valid_until: UNIX_EPOCH
                + Duration::from_secs(exp.saturating_add(self.settings.leeway_secs)),
        })
    }
}

/// The raw token a request presents: the Bearer header wins; else the `__session` cookie.
/// An `Authorization` header of another scheme is ignored; the query string never counts.
fn presented_token(req: &Request) -> Option<&str> {
    for value in req.headers().get_all(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim_start();
        if value.len() >= 6 && value[..6].eq_ignore_ascii_case("bearer") {
            let rest = &value[6..];
            if rest.is_empty() || rest.starts_with(' ') {
                return Some(rest.trim());
            }
        }
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "__session")
        .map(|(_, value)| value.trim().trim_matches('"'))
}

/// A Clerk session token sent as `Authorization: Bearer <jwt>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
#[allow(dead_code)]
pub struct BearerAuth(poem_openapi::auth::Bearer);

/// The Clerk `__session` cookie (same-site apps; lets a plain EventSource authenticate). Used
/// only when no Bearer header is present.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "__session", key_in = "cookie")]
#[allow(dead_code)]
pub struct SessionCookie(ApiKey);

/// What the request handlers need from the app to authenticate.
pub trait AuthContext: Send + Sync {
    fn verifier(&self) -> &Verifier;
    fn record_failure(&self, reason: AuthFailureReason);
}

impl<'a> ApiExtractor<'a> for Session {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        BearerAuth::register(registry);
        SessionCookie::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut schemes = BearerAuth::security_schemes();
        schemes.extend(SessionCookie::security_schemes());
        schemes
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let ctx = req
            .data::<Arc<dyn AuthContext>>()
            .expect("the app installs its AuthContext as request data");
        let result = match presented_token(req) {
            None => Err(AuthFailureReason::missing),
            Some(token) => ctx.verifier().verify(token).await,
        };
        result.map_err(|reason| {
            ctx.record_failure(reason);
            tracing::debug!(?reason, "authentication failed");
            ApiError::Unauthorized.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    fn verifier() -> &'static Verifier {
        static VERIFIER: OnceLock<Verifier> = OnceLock::new();
        VERIFIER.get_or_init(|| {
            let (_, public) = crate::dev::generate_rsa_pem().unwrap();
            Verifier::new(AuthSettings {
                pem: Some(public),
                leeway_secs: 5,
                ..AuthSettings::default()
            })
            .unwrap()
        })
    }

    fn verify(token: &str) -> Result<Session, AuthFailureReason> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(verifier().verify(token))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_strings_are_refused_without_panic(token in ".{0,300}") {
            prop_assert!(verify(&token).is_err());
        }

        #[test]
        fn arbitrary_jwt_shapes_are_refused_without_panic(
            header in prop::collection::vec(any::<u8>(), 0..80),
            claims in prop::collection::vec(any::<u8>(), 0..200),
            sig in "[A-Za-z0-9_-]{0,90}",
            alg in prop::sample::select(vec!["RS256", "HS256", "none", "ES256", "rs256", ""]),
        ) {
            let header_json = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            for h in [URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(header_json)] {
                let token = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(&claims));
                prop_assert!(verify(&token).is_err());
            }
        }
    }

    #[test]
    fn presented_token_rules() {
        let req = |headers: &[(&str, &str)]| {
            let mut builder = Request::builder();
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            builder.finish()
        };
        assert_eq!(
            presented_token(&req(&[("Authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "bearer   abc  ")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "Bearer")])),
            Some("")
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "Bearerabc")])),
            None
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            presented_token(&req(&[
                ("Authorization", "Basic abc"),
                ("Cookie", "a=1; __session=tok")
            ])),
            Some("tok")
        );
        assert_eq!(
            presented_token(&req(&[
                ("Authorization", "Bearer head"),
                ("Cookie", "__session=tok")
            ])),
            Some("head")
        );
        assert_eq!(
            presented_token(&req(&[("Cookie", "x__session=no; __session_other=no")])),
            None
        );
    }
}
