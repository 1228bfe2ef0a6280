//! Development tokens, signed with the HS256 development secret.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sovra_config::AuthSettings;

/// What `sovra token` asks for.
#[derive(Debug, Clone)]
pub struct DevTokenRequest {
    pub subject: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub ttl_secs: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "no development secret is configured: set auth.development = true and auth.dev_secret (or SOVRA__AUTH__DEV_SECRET); production tokens come from your identity provider"
    )]
    NoDevSecret,
    #[error("unknown role `{0}` (known: reader, ingester, auditor, admin)")]
    UnknownRole(String),
    #[error("signing the token: {0}")]
    Sign(String),
}

/// Mints an HS256 token carrying the configured claim names, issuer and audience.
pub fn mint_development_token(
    settings: &AuthSettings,
    req: &DevTokenRequest,
) -> Result<String, MintError> {
    if !settings.development || settings.dev_secret.is_empty() {
        return Err(MintError::NoDevSecret);
    }
    if let Some(bad) = req
        .roles
        .iter()
        .find(|r| r.parse::<crate::Role>().is_err() && !settings.role_map.contains_key(*r))
    {
        return Err(MintError::UnknownRole(bad.clone()));
    }
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "sub": req.subject,
        "iat": now,
        "nbf": now,
        "exp": now + req.ttl_secs,
    });
    if let Some(map) = claims.as_object_mut() {
        map.insert(settings.claims.tenant.clone(), json!(req.tenant));
        if let Some(path) = settings.claims.roles.first() {
            map.insert(path.clone(), json!(req.roles));
        }
        if let Some(path) = settings.claims.groups.first() {
            map.insert(path.clone(), json!(req.groups));
        }
        if let Some(iss) = settings.issuer.as_deref().filter(|s| !s.is_empty()) {
            map.insert("iss".into(), json!(iss));
        }
        if let Some(aud) = settings.audience.as_deref().filter(|s| !s.is_empty()) {
            map.insert("aud".into(), json!(aud));
        }
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(settings.dev_secret.as_bytes()),
    )
    .map_err(|e| MintError::Sign(e.to_string()))
}
