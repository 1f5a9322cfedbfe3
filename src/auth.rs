//! Authentication: Clerk session tokens (RS256 JWTs) from a Bearer header or the `__session`
//! cookie, verified against a PEM key and/or a cached JWKS (contract §2).
//!
//! [`Session`] is the extractor every `/api` operation takes first, so a failed authentication
//! (401) always beats a bad parameter (400) and a missing job (404).

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
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

use crate::{config::Config, error::ApiError, http_errors::HttpError, metrics::AuthFailureReason};

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
/// About how many tokens are remembered at once. Past it, the coldest few make room (a reader
/// who keeps presenting the same token keeps its entry); nothing ever empties the whole cache.
const VERIFIED_CACHE_CAPACITY: usize = 10_000;

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
    /// RFC 7515 §4.1.11: extensions the token insists on. We understand none, so any is a
    /// rejection.
    crit: Option<serde::de::IgnoredAny>,
}

/// The claims we read; each is checked by hand, strictly (the JWT library only checks the
/// signature): `sub` and `azp` strings, `iss` a string, `exp`, `nbf` and `iat` NumericDates.
#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    /// Only its form is checked: a token issued "in the future" by a skewed clock is still
    /// bounded by `nbf` and `exp`.
    iat: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
    azp: Option<serde_json::Value>,
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, integer or fractional, as a time.
/// `None` for anything else, or a time the clock cannot represent.
fn numeric_date(value: &serde_json::Value) -> Option<SystemTime> {
    let secs = value.as_f64()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
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
    verified: quick_cache::sync::Cache<String, (Session, Instant)>,
    /// Tokens verified in full (signature and claims) so far: what the cache saves.
    full_verifications: AtomicU64,
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
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_CAPACITY),
            full_verifications: AtomicU64::new(0),
        })
    }

    #[cfg(test)]
    fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.verified = quick_cache::sync::Cache::new(capacity);
        self
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

    /// Verifies the signature with `key`, returning the claims.
    fn verify_with(&self, token: &str, key: &DecodingKey) -> Result<Claims, AuthFailureReason> {
        let mut validation = Validation::new(Algorithm::RS256);
        // Signature only: every claim is checked by hand afterwards, strictly and without
        // overflow (the library accepts an `iss` array and panics on no time of ours, but it
        // treats a fractional `exp` and `nbf` differently).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => AuthFailureReason::bad_signature,
                ErrorKind::InvalidAlgorithm => AuthFailureReason::bad_alg,
                _ => AuthFailureReason::malformed,
            })
    }

    /// Finds the key for the token's `kid` and verifies its signature (contract §2, keys).
    async fn verify_signature(
        &self,
        token: &str,
        kid: Option<&str>,
    ) -> Result<Claims, AuthFailureReason> {
        if let Some(key) = self.cached_key(kid) {
            return self.verify_with(token, &key);
        }
        // A PEM key verifies what the JWKS does not know. A `kid` the JWKS has not shown, on a
        // token the PEM key rejects, follows the refetch rule as if no PEM key were set: a key
        // rotation needs no restart.
        let pem = match &self.pem_key {
            Some(key) => match self.verify_with(token, key) {
                Ok(claims) => return Ok(claims),
                Err(reason) if self.settings.jwks_url.is_none() => return Err(reason),
                Err(reason) => Some(reason),
            },
            None => None,
        };
        if self.settings.jwks_url.is_none() {
            return Err(AuthFailureReason::no_key);
        }
        // Whether or not this call fetched, a concurrent fetch may have brought the key.
        self.refresh_jwks(false).await;
        if let Some(key) = self.cached_key(kid) {
            return self.verify_with(token, &key);
        }
        let fetched = self.jwks.read().unwrap_or_else(|p| p.into_inner()).fetched;
        Err(match (pem, fetched) {
            (Some(reason), _) if kid.is_none() => reason,
            (_, true) => AuthFailureReason::unknown_kid,
            (Some(reason), false) => reason,
            (None, false) => AuthFailureReason::no_key,
        })
    }

    /// Verifies a token (contract §2), or says why not.
    pub async fn verify(&self, token: &str) -> Result<Session, AuthFailureReason> {
        if let Some(session) = self.recently_verified(token) {
            return Ok(session);
        }
        self.full_verifications.fetch_add(1, Ordering::Relaxed);
        let session = self.verify_uncached(token).await?;
        let now = Instant::now();
        let remaining = session
            .valid_until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.verified.insert(
            token.to_owned(),
            (session.clone(), now + remaining.min(VERIFIED_CACHE_TTL)),
        );
        Ok(session)
    }

    fn recently_verified(&self, token: &str) -> Option<Session> {
        let (session, until) = self.verified.get(token)?;
        if Instant::now() < until && SystemTime::now() < session.valid_until {
            Some(session)
        } else {
            self.verified.remove(token);
            None
        }
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
        if header.crit.is_some() {
            return Err(R::malformed);
        }
        let claims = self.verify_signature(token, header.kid.as_deref()).await?;
        self.check_claims(claims, SystemTime::now())
    }

    /// The claims of a token whose signature verified, checked against `now` (contract §2).
    fn check_claims(&self, claims: Claims, now: SystemTime) -> Result<Session, AuthFailureReason> {
        use AuthFailureReason as R;
        let leeway = Duration::from_secs(self.settings.leeway_secs);
        let text = |value: Option<serde_json::Value>| match value {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(R::malformed),
        };
        let sub = text(claims.sub)?
            .filter(|s| !s.is_empty())
            .ok_or(R::malformed)?;
        let exp = claims
            .exp
            .as_ref()
            .map(|v| numeric_date(v).ok_or(R::malformed))
            .transpose()?
            .ok_or(R::malformed)?;
        let valid_until = exp.checked_add(leeway).ok_or(R::malformed)?;
        let nbf = claims
            .nbf
            .as_ref()
            .map(|v| numeric_date(v).ok_or(R::malformed))
            .transpose()?;
        if let Some(iat) = &claims.iat {
            numeric_date(iat).ok_or(R::malformed)?;
        }
        let iss = text(claims.iss)?;
        let azp = text(claims.azp)?;
        if now >= valid_until {
            return Err(R::expired);
        }
        if let Some(nbf) = nbf
            && now.checked_add(leeway).is_some_and(|late| nbf > late)
        {
            return Err(R::not_yet_valid);
        }
        if let Some(issuer) = &self.settings.issuer
            && iss.as_deref() != Some(issuer.as_str())
        {
            return Err(R::wrong_issuer);
        }
        if !self.settings.authorized_parties.is_empty()
            && !azp.is_some_and(|azp| self.settings.authorized_parties.contains(&azp))
        {
            return Err(R::wrong_party);
        }
        Ok(Session {
            user_id: sub,
            valid_until,
        })
    }
}

/// The raw token a request presents: the Bearer header wins; else the `__session` cookie.
/// An `Authorization` header of another scheme is ignored; the query string never counts.
/// Two `Authorization` headers are `malformed`: which one a proxy or a client meant is
/// anyone's guess, so neither is trusted.
fn presented_token(req: &Request) -> Result<Option<&str>, AuthFailureReason> {
    let mut authorization = req.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (authorization.next(), authorization.next());
    if second.is_some() {
        return Err(AuthFailureReason::malformed);
    }
    if let Some(value) = first.and_then(|v| v.to_str().ok()) {
        let value = value.trim_start();
        if value.len() >= 6 && value[..6].eq_ignore_ascii_case("bearer") {
            let rest = &value[6..];
            if rest.is_empty() || rest.starts_with(' ') {
                return Ok(Some(rest.trim()));
            }
        }
    }
    Ok(req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "__session")
        .map(|(_, value)| value.trim().trim_matches('"')))
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
            Err(reason) => Err(reason),
            Ok(None) => Err(AuthFailureReason::missing),
            Ok(Some(token)) => ctx.verifier().verify(token).await,
        };
        result.map_err(|reason| {
            ctx.record_failure(reason);
            tracing::debug!(?reason, "authentication failed");
            HttpError(ApiError::Unauthorized).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    struct Fixture {
        verifier: Verifier,
        key: jsonwebtoken::EncodingKey,
        public: String,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let (private, public) = crate::dev::generate_rsa_pem().unwrap();
            Fixture {
                verifier: Verifier::new(AuthSettings {
                    pem: Some(public.clone()),
                    issuer: Some("https://issuer.test".into()),
                    leeway_secs: 5,
                    ..AuthSettings::default()
                })
                .unwrap(),
                key: jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
                public,
            }
        })
    }

    fn verifier() -> &'static Verifier {
        &fixture().verifier
    }

    /// A token with exactly this header and these claims, signed with the trusted key.
    fn signed(header: serde_json::Value, claims: serde_json::Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &fixture().key, Algorithm::RS256)
            .unwrap();
        format!("{message}.{sig}")
    }

    fn now_secs() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    fn claims_with(patch: serde_json::Value) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "sub": "user_a", "iss": "https://issuer.test",
            "exp": now_secs() as u64 + 600, "nbf": now_secs() as u64 - 1,
        });
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }

    fn rs256() -> serde_json::Value {
        serde_json::json!({"alg": "RS256", "typ": "JWT"})
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever NumericDates a signed token carries (huge, fractional, negative, not
        /// numbers), verification answers without panicking, and times the clock cannot
        /// represent are `malformed`.
        #[test]
        fn any_exp_and_nbf_are_answered_without_panic(
            exp in prop_oneof![
                any::<u64>().prop_map(serde_json::Value::from),
                (u64::MAX - 1000..=u64::MAX).prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::json!("soon")),
                Just(serde_json::Value::Null),
            ],
            nbf in prop_oneof![
                any::<u64>().prop_map(serde_json::Value::from),
                (u64::MAX - 1000..=u64::MAX).prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                Just(serde_json::json!([1])),
            ],
        ) {
            let token = signed(rs256(), claims_with(serde_json::json!({"exp": exp, "nbf": nbf})));
            let result = verify(&token);
            if let Some(exp) = exp.as_u64().filter(|e| *e > 1u64 << 40) {
                // Past the year 36,000: whatever the clock can hold, never a pass as expired.
                prop_assert!(result.is_ok() || result.as_ref().unwrap_err() != &AuthFailureReason::expired, "{exp}");
            }
            if exp.as_u64().is_some_and(|e| e > u64::MAX - 1000) {
                prop_assert_eq!(result.unwrap_err(), AuthFailureReason::malformed);
            }
        }
    }

    #[test]
    fn claims_are_strict_and_numeric_dates_alike() {
        let now = now_secs();
        // Fractional exp and nbf: accepted alike.
        let ok = signed(
            rs256(),
            claims_with(serde_json::json!({"exp": now + 600.5, "nbf": now - 1.25})),
        );
        assert_eq!(verify(&ok).unwrap().user_id, "user_a");
        let early = signed(
            rs256(),
            claims_with(serde_json::json!({"nbf": now + 120.5})),
        );
        assert_eq!(
            verify(&early).unwrap_err(),
            AuthFailureReason::not_yet_valid
        );
        let late = signed(rs256(), claims_with(serde_json::json!({"exp": now - 60.5})));
        assert_eq!(verify(&late).unwrap_err(), AuthFailureReason::expired);
        // exp past what the clock can hold, with or without the leeway: malformed, no panic.
        for exp in [u64::MAX, u64::MAX - 5, 1u64 << 63] {
            let far = signed(rs256(), claims_with(serde_json::json!({"exp": exp})));
            assert_eq!(
                verify(&far).unwrap_err(),
                AuthFailureReason::malformed,
                "{exp}"
            );
        }
        let far_nbf = signed(rs256(), claims_with(serde_json::json!({"nbf": u64::MAX})));
        assert_eq!(verify(&far_nbf).unwrap_err(), AuthFailureReason::malformed);
        // iss must be a string, even one that lists the right issuer.
        let array = signed(
            rs256(),
            claims_with(serde_json::json!({"iss": ["https://issuer.test"]})),
        );
        assert_eq!(verify(&array).unwrap_err(), AuthFailureReason::malformed);
        let number_sub = signed(rs256(), claims_with(serde_json::json!({"sub": 42})));
        assert_eq!(
            verify(&number_sub).unwrap_err(),
            AuthFailureReason::malformed
        );
        // A critical extension we do not understand: rejected (RFC 7515 §4.1.11).
        let crit = signed(
            serde_json::json!({"alg": "RS256", "typ": "JWT", "crit": ["exp"], "exp": 1}),
            claims_with(serde_json::json!({})),
        );
        assert_eq!(verify(&crit).unwrap_err(), AuthFailureReason::malformed);
        assert!(verify(&signed(rs256(), claims_with(serde_json::json!({})))).is_ok());
    }

    #[test]
    fn iat_is_a_numeric_date_when_present() {
        let now = now_secs();
        for iat in [
            serde_json::json!(now as u64),
            serde_json::json!(now - 0.5),
            // Issued "later" by a skewed clock: only the form is checked.
            serde_json::json!(now + 3600.0),
        ] {
            let token = signed(rs256(), claims_with(serde_json::json!({"iat": iat})));
            assert!(verify(&token).is_ok(), "{iat}");
        }
        for iat in [
            serde_json::json!("x"),
            serde_json::json!(1e308),
            serde_json::json!(u64::MAX),
            serde_json::json!(-1),
            serde_json::json!([1]),
        ] {
            let token = signed(rs256(), claims_with(serde_json::json!({"iat": iat})));
            assert_eq!(
                verify(&token).unwrap_err(),
                AuthFailureReason::malformed,
                "{iat}"
            );
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
            Ok(Some("abc"))
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "bearer   abc  ")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "Bearer")])),
            Ok(Some(""))
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "Bearerabc")])),
            Ok(None)
        );
        assert_eq!(
            presented_token(&req(&[("Authorization", "Basic abc")])),
            Ok(None)
        );
        assert_eq!(
            presented_token(&req(&[
                ("Authorization", "Basic abc"),
                ("Cookie", "a=1; __session=tok")
            ])),
            Ok(Some("tok"))
        );
        assert_eq!(
            presented_token(&req(&[
                ("Authorization", "Bearer head"),
                ("Cookie", "__session=tok")
            ])),
            Ok(Some("head"))
        );
        assert_eq!(
            presented_token(&req(&[("Cookie", "x__session=no; __session_other=no")])),
            Ok(None)
        );
        // Two Authorization headers, whatever their schemes: neither is trusted.
        for (a, b) in [
            ("Bearer one", "Bearer two"),
            ("Bearer one", "Basic abc"),
            ("Basic abc", "Bearer two"),
        ] {
            assert_eq!(
                presented_token(&req(&[
                    ("Authorization", a),
                    ("Authorization", b),
                    ("Cookie", "__session=tok")
                ])),
                Err(AuthFailureReason::malformed),
                "{a} + {b}"
            );
        }
    }

    #[test]
    fn a_full_token_cache_evicts_cold_tokens_not_the_ones_in_use() {
        const CAPACITY: usize = 200;
        let verifier = Verifier::new(AuthSettings {
            pem: Some(fixture().public.clone()),
            issuer: Some("https://issuer.test".into()),
            leeway_secs: 5,
            ..AuthSettings::default()
        })
        .unwrap()
        .with_cache_capacity(CAPACITY);
        let token = |n: usize| {
            signed(
                rs256(),
                claims_with(serde_json::json!({"sub": format!("user_{n}")})),
            )
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let verify = |t: &str| runtime.block_on(verifier.verify(t)).unwrap();
        let full = || verifier.full_verifications.load(Ordering::Relaxed);

        // Viewers in use: each presents its token again and again.
        let hot: Vec<String> = (0..CAPACITY / 4).map(token).collect();
        for t in &hot {
            verify(t);
        }
        assert_eq!(full(), hot.len() as u64);
        for t in &hot {
            assert_eq!(verify(t).user_id, verify(t).user_id);
        }
        assert_eq!(full(), hot.len() as u64, "a second presentation is cached");

        // Three times the capacity in new tokens, one presentation each, while the hot ones keep
        // coming back: the cache stays bounded and makes room from the cold end. (The old cache
        // emptied itself when full, so every token in use was verified again at once, each time.)
        let before = full();
        let cold = 3 * CAPACITY;
        for (i, t) in (0..cold).map(|n| token(10_000 + n)).enumerate() {
            verify(&t);
            verify(&hot[i % hot.len()]);
        }
        assert!(verifier.verified.len() <= CAPACITY + CAPACITY / 10);
        let hot_again = full() - before - cold as u64;
        assert!(
            hot_again < hot.len() as u64 / 5,
            "tokens in use were verified again {hot_again} times ({} tokens in use)",
            hot.len()
        );
    }
}
