//! Authentication and authorization.
//!
//! A bearer JWT becomes a [`Principal`] (subject, tenant, roles, groups).
//! HS256 is accepted only with the development secret; RS256 and ES256 only
//! with keys from a JWKS file or URL, chosen by `kid`. Authorization is a
//! table from [`Permission`] to the [`Role`]s that hold it: deny by default.

mod claims;
mod jwks;
mod principal;
mod scope;
mod token;

pub use principal::{Acl, Permission, Principal, Role};
pub use scope::{AccessScope, fields};
pub use token::{DevTokenRequest, mint_development_token};

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sovra_config::AuthSettings;

use crate::jwks::KeyCache;

/// Why a request was not authenticated. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("the token is larger than allowed")]
    TooLarge,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("the token carries more groups than allowed")]
    TooManyGroups,
    #[error("no signing keys are available")]
    KeysUnavailable,
}

impl AuthError {
    /// A stable, machine-readable reason, recorded in the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::NotBearer => "token_not_bearer",
            AuthError::TooLarge => "token_too_large",
            AuthError::Malformed => "token_malformed",
            AuthError::UnsupportedAlgorithm => "token_algorithm",
            AuthError::UnknownKey => "token_unknown_key",
            AuthError::BadSignature => "token_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongIssuer => "token_issuer",
            AuthError::WrongAudience => "token_audience",
            AuthError::MissingClaim(_) => "token_missing_claim",
            AuthError::TooManyGroups => "token_too_many_groups",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Errors building the authenticator at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("reading JWKS file {path}: {message}")]
    JwksFile { path: String, message: String },
    #[error("building the JWKS HTTP client: {0}")]
    Http(String),
}

/// Turns bearer tokens into principals. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    dev_key: Option<DecodingKey>,
    keys: KeyCache,
}

impl Authenticator {
    /// Builds the authenticator; a JWKS file is read now, a JWKS URL on first use.
    pub async fn new(settings: &AuthSettings) -> Result<Self, SetupError> {
        let dev_key = (settings.development && !settings.dev_secret.is_empty())
            .then(|| DecodingKey::from_secret(settings.dev_secret.as_bytes()));
        let keys = KeyCache::new(settings)?;
        keys.initial_load().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                dev_key,
                keys,
            }),
        })
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = bearer_token(header)?;
        self.authenticate(token).await
    }

    /// Authenticates a compact JWT.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let s = &self.inner.settings;
        if token.len() > s.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        if !well_formed(token) {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self
                    .inner
                    .dev_key
                    .as_ref()
                    .ok_or(AuthError::UnsupportedAlgorithm)?;
                self.decode(token, key, Algorithm::HS256)?
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let key = self
                    .inner
                    .keys
                    .key_for(header.kid.as_deref(), header.alg)
                    .await?;
                self.decode(token, &key, header.alg)?
            }
            _ => return Err(AuthError::UnsupportedAlgorithm),
        };
        claims::principal_from_claims(&claims, s)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<serde_json::Value, AuthError> {
        let s = &self.inner.settings;
        let mut v = Validation::new(alg);
        v.leeway = s.leeway_secs;
        v.validate_nbf = true;
        v.validate_exp = true;
        let mut required = vec!["exp"];
        match s.issuer.as_deref().filter(|i| !i.is_empty()) {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match s.audience.as_deref().filter(|a| !a.is_empty()) {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        jsonwebtoken::decode::<serde_json::Value>(token, key, &v)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::UnsupportedAlgorithm
                }
                _ => AuthError::Malformed,
            })
    }

    /// Timeout used for JWKS fetches (exposed for diagnostics).
    pub fn jwks_fetch_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.settings.jwks_fetch_timeout_secs)
    }
}

/// Three base64url segments, the first two non-empty (JWS compact form).
fn well_formed(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let (scheme, rest) = header.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_form() {
        assert!(well_formed("eyJh.eyJz.c2ln"));
        assert!(well_formed("eyJh.eyJz."));
        assert!(!well_formed("eyJh.eyJz"));
        assert!(!well_formed("eyJh..c2ln"));
        assert!(!well_formed("eyJh.e!Jz.c2ln"));
        assert!(!well_formed("eyJh.eyJz.c2ln.x"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc "), Ok("abc"));
        assert_eq!(bearer_token("Basic abc"), Err(AuthError::NotBearer));
        assert_eq!(bearer_token("Bearer "), Err(AuthError::Missing));
        assert_eq!(bearer_token("Bearer"), Err(AuthError::NotBearer));
    }
}
