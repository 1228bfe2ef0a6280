//! Public keys from a JWKS file or URL, cached by `kid`.
//!
//! Keys older than `auth.jwks_refresh_interval_secs` are fetched again
//! before they are used, so a key the identity provider removed stops
//! verifying within that time; an unknown `kid` triggers a refetch too. Both
//! are rate-limited to one per `auth.jwks_refetch_interval_secs`. A failed
//! fetch keeps the last good keys. `jku` and `x5u` in token headers are never
//! followed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sovra_config::AuthSettings;
use tokio::sync::Mutex;

use crate::{AuthError, SetupError};

enum Source {
    File(PathBuf),
    Url(String, reqwest::Client),
}

#[derive(Clone)]
struct Entry {
    key: DecodingKey,
    alg: Algorithm,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Entry>,
    unnamed: Vec<Entry>,
}

pub(crate) struct KeyCache {
    sources: Vec<Source>,
    keys: RwLock<Keys>,
    last_attempt: Mutex<Option<Instant>>,
    /// When the keys were last fetched successfully.
    fetched_at: RwLock<Option<Instant>>,
    min_interval: Duration,
    max_age: Duration,
}

impl KeyCache {
    pub(crate) fn new(settings: &AuthSettings) -> Result<Self, SetupError> {
        let mut sources = Vec::new();
        if let Some(p) = &settings.jwks_file {
            sources.push(Source::File(p.clone()));
        }
        if let Some(u) = settings.jwks_url.as_ref().filter(|u| !u.is_empty()) {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(settings.jwks_fetch_timeout_secs))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| SetupError::Http(e.to_string()))?;
            sources.push(Source::Url(u.clone(), client));
        }
        Ok(Self {
            sources,
            keys: RwLock::new(Keys::default()),
            last_attempt: Mutex::new(None),
            fetched_at: RwLock::new(None),
            min_interval: Duration::from_secs(settings.jwks_refetch_interval_secs),
            max_age: Duration::from_secs(settings.jwks_refresh_interval_secs),
        })
    }

    /// A JWKS file must be readable at start-up; a URL may be down (its keys
    /// are fetched again on first use).
    pub(crate) async fn initial_load(&self) -> Result<(), SetupError> {
        if self.sources.is_empty() {
            return Ok(());
        }
        for source in &self.sources {
            if let Source::File(p) = source {
                fetch(source)
                    .await
                    .map_err(|message| SetupError::JwksFile {
                        path: p.display().to_string(),
                        message,
                    })?;
            }
        }
        let _ = self.refresh(true).await;
        Ok(())
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.read().ok()?;
        let entry = match kid {
            Some(kid) => keys.by_kid.get(kid),
            None => {
                let mut same: Vec<&Entry> = keys
                    .by_kid
                    .values()
                    .chain(keys.unnamed.iter())
                    .filter(|e| e.alg == alg)
                    .collect();
                if same.len() == 1 { same.pop() } else { None }
            }
        }?;
        (entry.alg == alg).then(|| entry.key.clone())
    }

    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        if self.sources.is_empty() {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        if self.stale() {
            self.refresh(false).await;
        }
        if let Some(k) = self.lookup(kid, alg) {
            return Ok(k);
        }
        self.refresh(false).await;
        if let Some(k) = self.lookup(kid, alg) {
            return Ok(k);
        }
        let empty = self
            .keys
            .read()
            .map(|k| k.by_kid.is_empty() && k.unnamed.is_empty())
            .unwrap_or(true);
        Err(if empty {
            AuthError::KeysUnavailable
        } else {
            AuthError::UnknownKey
        })
    }

    /// Whether the keys are older than the refresh interval (or never came).
    fn stale(&self) -> bool {
        self.fetched_at
            .read()
            .map(|t| t.is_none_or(|t| t.elapsed() >= self.max_age))
            .unwrap_or(true)
    }

    /// Refetches every source, at most once per interval unless forced.
    async fn refresh(&self, force: bool) -> bool {
        let mut last = self.last_attempt.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        let mut fresh = Keys::default();
        for source in &self.sources {
            match fetch(source).await {
                Ok(set) => add_keys(&mut fresh, set),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS fetch failed; keeping the last good keys");
                    return false;
                }
            }
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = fresh;
        }
        if let Ok(mut at) = self.fetched_at.write() {
            *at = Some(Instant::now());
        }
        true
    }
}

async fn fetch(source: &Source) -> Result<JwkSet, String> {
    match source {
        Source::File(p) => {
            let bytes = tokio::fs::read(p).await.map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS document: {e}"))
        }
        Source::Url(u, client) => {
            let resp = client
                .get(u)
                .send()
                .await
                .map_err(|e| format!("fetching {u}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("fetching {u}: HTTP {}", resp.status()));
            }
            resp.json::<JwkSet>()
                .await
                .map_err(|e| format!("{u} is not a JWKS document: {e}"))
        }
    }
}

fn add_keys(keys: &mut Keys, set: JwkSet) {
    for jwk in set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        let declared_ok = match jwk.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
            Some(_) => false,
        };
        if !declared_ok {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let entry = Entry { key, alg };
        match &jwk.common.key_id {
            Some(kid) => {
                keys.by_kid.insert(kid.clone(), entry);
            }
            None => keys.unnamed.push(entry),
        }
    }
}
