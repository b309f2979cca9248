//! Authentication (SPEC §7): JWTs signed HS256 with a shared secret, or RS256 / ES256 checked
//! with a public key. Required claims `sub` (the user) and `exp`; optional `org_id` and `role`.
//! Tokens never reach a log: errors describe the token, never quote it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use presence_core::{OrgId, UserId};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    exp: u64,
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
    /// Bad signature, wrong algorithm, malformed token, or bad claims.
    #[error("the token is not valid: {0}")]
    Invalid(String),
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
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.keys.validation.algorithms)
            .finish_non_exhaustive()
    }
}

fn validation(algorithms: &[Algorithm]) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms.to_vec();
    v.set_required_spec_claims(&["exp", "sub"]);
    v.leeway = 5;
    v
}

impl Authenticator {
    fn new(decoding: DecodingKey, algorithm: Algorithm, encoding: Option<EncodingKey>) -> Self {
        Self {
            keys: std::sync::Arc::new(Keys {
                decoding,
                validation: validation(&[algorithm]),
                encoding,
            }),
        }
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            Some(EncodingKey::from_secret(secret)),
        )
    }

    /// RS256 or ES256 with a PEM public key (RSA or P-256).
    pub fn public_key(pem: &[u8]) -> Result<Self, String> {
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(k, Algorithm::RS256, None));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(k) => Ok(Self::new(k, Algorithm::ES256, None)),
            Err(e) => Err(format!("not an RSA or P-256 public key in PEM form: {e}")),
        }
    }

    /// Checks a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.keys.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidAlgorithm => {
                        AuthError::Invalid("wrong signing algorithm".into())
                    }
                    ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                    ErrorKind::MissingRequiredClaim(c) => {
                        AuthError::Invalid(format!("missing claim {c}"))
                    }
                    ErrorKind::Json(_) => AuthError::Invalid(
                        "bad claims (sub and org_id must be valid ids, role user|service|admin)"
                            .into(),
                    ),
                    _ => AuthError::Invalid("malformed token".into()),
                })?;
        let c = data.claims;
        Ok(Principal {
            user: c.sub,
            org: c.org_id,
            role: c.role.unwrap_or_default(),
            expires_at: c.exp,
        })
    }

    /// Issues an HS256 token; `None` when this node only holds a public key.
    pub fn issue(
        &self,
        user: &UserId,
        org: Option<&OrgId>,
        role: Role,
        ttl: Duration,
    ) -> Option<String> {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + ttl;
        let claims = Claims {
            sub: user.clone(),
            exp: exp.as_secs(),
            org_id: org.cloned(),
            role: Some(role),
        };
        let key = self.keys.encoding.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
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
    use super::*;

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let a = Authenticator::hs256(b"secret");
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
        let in_a_minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        assert!((in_a_minute - 1..=in_a_minute).contains(&p.expires_at));
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let a = Authenticator::hs256(b"secret");
        let other = Authenticator::hs256(b"other");
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
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "1", "exp": 1_000_000}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.verify(&expired), Err(AuthError::Expired));
        let bad_sub = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a b", "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(a.verify(&bad_sub), Err(AuthError::Invalid(_))));
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"sub": "1", "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(
            a.verify(&hs384),
            Err(AuthError::Invalid("wrong signing algorithm".into()))
        );
    }
}
