//! Mapping a token's claims to a [`Principal`] through configurable paths.

use std::collections::BTreeSet;

use serde_json::Value;
use sovra_config::AuthSettings;

use crate::{AuthError, Principal, Role};

/// Looks a claim up: first as one top-level name (Entra ID uses URLs as
/// claim names), then as a dotted path (`realm_access.roles`).
fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn principal_from_claims(
    claims: &Value,
    settings: &AuthSettings,
) -> Result<Principal, AuthError> {
    let paths = &settings.claims;
    let subject = lookup(claims, &paths.subject)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::MissingClaim(paths.subject.clone()))?
        .to_owned();
    let tenant = match lookup(claims, &paths.tenant).and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ if !settings.default_tenant.is_empty() => settings.default_tenant.clone(),
        _ => return Err(AuthError::MissingClaim(paths.tenant.clone())),
    };
    let roles: BTreeSet<Role> = paths
        .roles
        .iter()
        .filter_map(|p| lookup(claims, p))
        .flat_map(strings)
        .filter_map(|name| {
            let mapped = settings.role_map.get(&name).cloned().unwrap_or(name);
            mapped.parse::<Role>().ok()
        })
        .collect();
    let mut groups: Vec<String> = paths
        .groups
        .iter()
        .filter_map(|p| lookup(claims, p))
        .flat_map(strings)
        .collect();
    groups.sort();
    groups.dedup();
    if groups.len() > settings.max_groups {
        return Err(AuthError::TooManyGroups);
    }
    Ok(Principal {
        subject,
        tenant,
        roles,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keycloak_paths_and_role_map() {
        let mut s = AuthSettings::default();
        s.claims.roles = vec!["realm_access.roles".into()];
        s.claims.tenant = "org".into();
        s.role_map.insert("sovra-reader".into(), "reader".into());
        let claims = json!({"sub": "alice", "org": "bank", "realm_access": {"roles": ["sovra-reader", "offline_access"]}, "groups": ["treasury", "risk"]});
        let p = principal_from_claims(&claims, &s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.subject, "alice");
        assert_eq!(p.tenant, "bank");
        assert!(p.has_role(Role::Reader));
        assert_eq!(p.roles.len(), 1);
        assert_eq!(p.groups, vec!["risk", "treasury"]);
    }

    #[test]
    fn entra_url_claim_names() {
        let mut s = AuthSettings::default();
        s.claims.tenant = "tid".into();
        s.claims.groups = vec!["groups".into(), "https://sovra.example/groups".into()];
        let claims = json!({"sub": "bob", "tid": "t1", "roles": ["auditor"], "https://sovra.example/groups": ["g1"]});
        let p = principal_from_claims(&claims, &s).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.has_role(Role::Auditor));
        assert_eq!(p.groups, vec!["g1"]);
    }

    #[test]
    fn missing_tenant_and_too_many_groups() {
        let mut s = AuthSettings::default();
        let claims = json!({"sub": "bob"});
        assert_eq!(
            principal_from_claims(&claims, &s),
            Err(AuthError::MissingClaim("tenant".into()))
        );
        s.default_tenant = "default".into();
        assert_eq!(
            principal_from_claims(&claims, &s).map(|p| p.tenant),
            Ok("default".into())
        );
        s.max_groups = 1;
        let claims = json!({"sub": "bob", "groups": ["a", "b"]});
        assert_eq!(
            principal_from_claims(&claims, &s),
            Err(AuthError::TooManyGroups)
        );
    }
}
