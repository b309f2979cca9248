//! Authentication (SPEC §7): JWTs signed HS256 with a shared secret, or RS256 / ES256 checked
//! with a public key. Required claims `sub` (the user) and `exp`; optional `org_id`, `role`,
//! `nbf`, and `aud` / `iss` when the node is configured to check them. Expiry is judged by
//! the node's [`Clock`], not the machine's. Tokens never reach a log: errors describe the
//! token, never quote it.
//!
//! [`Caller`] is the extractor every REST route takes; [`bearer`] reads the header for the
//! WebSocket upgrade too.

use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use presence_core::{OrgId, SharedClock, UserId};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::rate::RestLimiter;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Changes only its own presence.
    #[default]
    User,
    /// Acts for any user (backends).
    Service,
    /// Service, plus the admin routes.
    Admin,
}

impl Role {
    /// Whether the role may act for other users.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Service | Role::Admin)
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`.
    pub user: UserId,
    /// `org_id`, if the token carries one.
    pub org: Option<OrgId>,
    /// `role` (default `user`).
    pub role: Role,
    /// `exp`, unix seconds: a WebSocket opened with this token closes (4001) then.
    pub expires_at: u64,
}

impl Principal {
    /// How long the token has left at `now_ms` (the node's clock): a socket or SSE stream
    /// opened with it ends then.
    pub fn time_left(&self, now_ms: presence_core::Millis) -> Duration {
        let expires_ms = i64::try_from(self.expires_at)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        Duration::from_millis(u64::try_from(expires_ms.saturating_sub(now_ms)).unwrap_or(0))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_id: Option<OrgId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token at all.
    #[error("a bearer token is required")]
    Missing,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// Bad signature, wrong algorithm, malformed token, or bad claims.
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// Required `aud`; `None`: not checked (a token with `aud` is accepted).
    pub audience: Option<String>,
    /// Required `iss`; `None`: not checked.
    pub issuer: Option<String>,
    /// Slack allowed on `exp` and `nbf` for clocks that differ.
    pub leeway: Duration,
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(5),
        }
    }
}

/// Verifies (and, with a shared secret, issues) tokens. Cheap to clone: the service state
/// holding it is cloned for every request.
#[derive(Clone)]
pub struct Authenticator {
    keys: std::sync::Arc<Keys>,
}

struct Keys {
    decoding: DecodingKey,
    validation: Validation,
    encoding: Option<EncodingKey>,
    leeway_s: u64,
    clock: SharedClock,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.keys.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// jsonwebtoken checks the signature, the algorithm and `aud` / `iss`; `exp` and `nbf` are
/// checked in [`Authenticator::verify`] against the node's clock.
fn validation(algorithm: Algorithm, rules: &TokenRules) -> Validation {
    let mut v = Validation::new(algorithm);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.validate_exp = false;
    v.validate_nbf = false;
    match &rules.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    if let Some(iss) = &rules.issuer {
        v.set_issuer(&[iss]);
    }
    v
}

impl Authenticator {
    fn new(
        decoding: DecodingKey,
        algorithm: Algorithm,
        encoding: Option<EncodingKey>,
        rules: &TokenRules,
        clock: SharedClock,
    ) -> Self {
        Self {
            keys: std::sync::Arc::new(Keys {
                decoding,
                validation: validation(algorithm, rules),
                encoding,
                leeway_s: rules.leeway.as_secs(),
                clock,
            }),
        }
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], rules: &TokenRules, clock: SharedClock) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            Some(EncodingKey::from_secret(secret)),
            rules,
            clock,
        )
    }

    /// RS256 or ES256 with a PEM public key (RSA or P-256).
    pub fn public_key(pem: &[u8], rules: &TokenRules, clock: SharedClock) -> Result<Self, String> {
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(k, Algorithm::RS256, None, rules, clock));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(k) => Ok(Self::new(k, Algorithm::ES256, None, rules, clock)),
            Err(e) => Err(format!("not an RSA or P-256 public key in PEM form: {e}")),
        }
    }

    fn now_s(&self) -> u64 {
        u64::try_from(self.keys.clock.now_ms() / 1000).unwrap_or(0)
    }

    /// Checks a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.keys.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidAlgorithm => {
                        AuthError::Invalid("wrong signing algorithm".into())
                    }
                    ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                    ErrorKind::MissingRequiredClaim(c) => {
                        AuthError::Invalid(format!("missing claim {c}"))
                    }
                    ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                    ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                    ErrorKind::Json(_) => AuthError::Invalid(
                        "bad claims (sub and org_id must be valid ids, role user|service|admin)"
                            .into(),
                    ),
                    _ => AuthError::Invalid("malformed token".into()),
                })?;
        let c = data.claims;
        let (now, leeway) = (self.now_s(), self.keys.leeway_s);
        if c.exp.saturating_add(leeway) < now {
            return Err(AuthError::Expired);
        }
        if c.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Principal {
            user: c.sub,
            org: c.org_id,
            role: c.role.unwrap_or_default(),
            expires_at: c.exp,
        })
    }

    /// Issues an HS256 token valid for `ttl` from the node's clock; `None` when this node
    /// only holds a public key.
    pub fn issue(
        &self,
        user: &UserId,
        org: Option<&OrgId>,
        role: Role,
        ttl: Duration,
    ) -> Option<String> {
        let claims = Claims {
            sub: user.clone(),
            exp: self.now_s() + ttl.as_secs(),
            nbf: None,
            org_id: org.cloned(),
            role: Some(role),
        };
        let key = self.keys.encoding.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::unauthenticated(e.to_string())
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The caller of a REST route, from `Authorization: Bearer <token>`: verified (401
/// otherwise), then held to the per-subject REST rate limit (429 beyond it).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Authenticator: FromRef<S>,
    std::sync::Arc<RestLimiter>: FromRef<S>,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Authenticator::from_ref(state);
        let principal = bearer(&parts.headers)
            .ok_or(AuthError::Missing)
            .and_then(|t| auth.verify(t));
        let principal = principal.inspect_err(|_| {
            metrics::counter!("presenced_refusals_total", "reason" => "unauthenticated")
                .increment(1);
        })?;
        std::sync::Arc::<RestLimiter>::from_ref(state).check(
            &principal.user,
            principal.role.is_privileged(),
            1,
        )?;
        Ok(Caller(principal))
    }
}

/// A random HS256 secret for a node started with no configuration.
pub fn random_secret() -> String {
    use base64::Engine as _;
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use presence_core::ManualClock;
    use std::sync::Arc;

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes";
    const NOW_S: u64 = 1_732_616_700;

    fn clock() -> ManualClock {
        ManualClock::new(NOW_S as i64 * 1000)
    }

    fn hs256(secret: &[u8]) -> Authenticator {
        Authenticator::hs256(secret, &TokenRules::default(), Arc::new(clock()))
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let a = hs256(SECRET);
        let t = a.issue(
            &UserId::new("1").unwrap(),
            Some(&OrgId::new("100").unwrap()),
            Role::Service,
            Duration::from_secs(60),
        );
        let p = a.verify(&t.unwrap()).unwrap();
        assert_eq!(
            (p.user, p.org, p.role),
            (
                UserId::new("1").unwrap(),
                Some(OrgId::new("100").unwrap()),
                Role::Service
            )
        );
        assert_eq!(p.expires_at, NOW_S + 60, "exp comes from the node's clock");
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let a = hs256(SECRET);
        let other = hs256(b"another-secret-of-at-least-32-bytes");
        let t = other
            .issue(
                &UserId::new("1").unwrap(),
                None,
                Role::User,
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            a.verify(&t),
            Err(AuthError::Invalid("bad signature".into()))
        );
        assert!(matches!(
            a.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
        let expired = signed(serde_json::json!({"sub": "1", "exp": 1_000_000}));
        assert_eq!(a.verify(&expired), Err(AuthError::Expired));
        let bad_sub = signed(serde_json::json!({"sub": "a b", "exp": 4_000_000_000u64}));
        assert!(matches!(a.verify(&bad_sub), Err(AuthError::Invalid(_))));
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"sub": "1", "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            a.verify(&hs384),
            Err(AuthError::Invalid("wrong signing algorithm".into()))
        );
    }

    #[test]
    fn expiry_and_nbf_follow_the_nodes_clock_with_leeway() {
        let clock = clock();
        let a = Authenticator::hs256(SECRET, &TokenRules::default(), Arc::new(clock.clone()));
        let t = signed(serde_json::json!({"sub": "1", "exp": NOW_S + 10, "nbf": NOW_S + 3}));
        assert!(a.verify(&t).is_ok(), "nbf within the 5 s leeway");
        clock.advance(Duration::from_secs(15));
        assert!(a.verify(&t).is_ok(), "exp + leeway not passed yet");
        clock.advance(Duration::from_secs(1));
        assert_eq!(a.verify(&t), Err(AuthError::Expired));
        let later = signed(serde_json::json!({"sub": "1", "exp": NOW_S + 600, "nbf": NOW_S + 300}));
        assert_eq!(a.verify(&later), Err(AuthError::NotYetValid));
    }

    #[test]
    fn audience_and_issuer_are_checked_only_when_configured() {
        let with_aud =
            signed(serde_json::json!({"sub": "1", "exp": NOW_S + 60, "aud": "chat", "iss": "idp"}));
        assert!(
            hs256(SECRET).verify(&with_aud).is_ok(),
            "aud is accepted when none is configured"
        );
        let rules = |aud: &str, iss: &str| TokenRules {
            audience: Some(aud.into()),
            issuer: Some(iss.into()),
            ..TokenRules::default()
        };
        let strict = |r: TokenRules| Authenticator::hs256(SECRET, &r, Arc::new(clock()));
        assert!(strict(rules("chat", "idp")).verify(&with_aud).is_ok());
        assert_eq!(
            strict(rules("other", "idp")).verify(&with_aud),
            Err(AuthError::Invalid("wrong audience".into()))
        );
        assert_eq!(
            strict(rules("chat", "other")).verify(&with_aud),
            Err(AuthError::Invalid("wrong issuer".into()))
        );
    }
}
