//! Quotas per subject and per tenant (`[limits]`): requests per minute,
//! checked in the pipeline right after authentication, and generated tokens
//! per UTC day, checked before a generation and charged after it. The store
//! is in memory or in Redis (`sovra_limits`), so every replica shares the
//! same allowance. A refusal is 429 `rate_limited` with `Retry-After`,
//! audited with its reason and counted in `sovra_quota_denials_total`. A
//! store that cannot be reached lets requests through (logged): a quota
//! protects capacity, and an outage of Redis must not become one of Sovra.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use sovra_auth::Principal;
use sovra_limits::Decision;

use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// The most generous allowance among the principal's roles; `None`:
/// unlimited (a role without an entry, or with 0, is unlimited).
fn allowance<T: Copy + Ord + Default>(by_role: &BTreeMap<String, T>, p: &Principal) -> Option<T> {
    let mut best: Option<T> = None;
    for role in &p.roles {
        match by_role.get(role.as_str()).copied() {
            None => return None,
            Some(v) if v == T::default() => return None,
            Some(v) => best = Some(best.map_or(v, |b| b.max(v))),
        }
    }
    best
}

fn refused(reason: &str, detail: String, retry_after: Duration) -> Problem {
    let mut p = Problem::new(ErrorCode::RateLimited, detail).reason(reason);
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        p = p.header(header::RETRY_AFTER, v);
    }
    p
}

/// One request by `p` against its per-minute quotas (subject, then tenant).
pub async fn check_requests(state: &AppState, p: &Principal) -> Result<(), Problem> {
    let l = &state.settings.limits;
    let minute = Duration::from_secs(60);
    let mut checks = Vec::new();
    if let Some(n) = allowance(&l.requests_per_minute, p) {
        checks.push((
            format!("req:{}:{}", p.tenant, p.subject),
            n,
            "quota_requests",
            "you",
        ));
    }
    if l.tenant_requests_per_minute > 0 {
        checks.push((
            format!("req-tenant:{}", p.tenant),
            l.tenant_requests_per_minute,
            "quota_tenant_requests",
            "your organisation",
        ));
    }
    for (key, n, reason, who) in checks {
        match state.limits.take(&key, n, minute).await {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Refused { retry_after }) => {
                state
                    .metrics
                    .quota_denials
                    .with_label_values(&[reason])
                    .inc();
                return Err(refused(
                    reason,
                    format!("{who} made more than {n} requests in a minute; retry later"),
                    retry_after,
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "the limits store failed; the request is let through")
            }
        }
    }
    Ok(())
}

fn token_key(tenant: &str, subject: &str) -> String {
    format!("tokens:{tenant}:{subject}")
}

/// Whether `p` has generated tokens left today.
pub async fn check_tokens(state: &AppState, p: &Principal) -> Result<(), Problem> {
    let Some(limit) = allowance(&state.settings.limits.tokens_per_day, p) else {
        return Ok(());
    };
    match state.limits.today(&token_key(&p.tenant, &p.subject)).await {
        Ok(used) if used >= limit => {
            state
                .metrics
                .quota_denials
                .with_label_values(&["quota_tokens"])
                .inc();
            Err(refused(
                "quota_tokens",
                format!(
                    "you have used today's {limit} generated tokens; the budget renews at 00:00 UTC"
                ),
                sovra_limits::until_tomorrow(),
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "the limits store failed; the generation is let through");
            Ok(())
        }
    }
}

/// Charges `tokens` generated for `subject` of `tenant` to today's budget.
pub async fn charge_tokens(state: &AppState, tenant: &str, subject: &str, tokens: usize) {
    if tokens == 0 || state.settings.limits.tokens_per_day.is_empty() {
        return;
    }
    if let Err(e) = state
        .limits
        .add_today(&token_key(tenant, subject), tokens as u64)
        .await
    {
        tracing::error!(error = %e, "generated tokens could not be charged to the daily budget");
    }
}

#[cfg(test)]
mod tests {
    use super::allowance;
    use sovra_auth::{Principal, Role};
    use std::collections::BTreeMap;

    fn p(roles: &[Role]) -> Principal {
        Principal {
            subject: "s".into(),
            tenant: "t".into(),
            roles: roles.iter().copied().collect(),
            groups: vec![],
        }
    }

    #[test]
    fn the_most_generous_role_wins_and_absent_means_unlimited() {
        let by_role: BTreeMap<String, u32> =
            [("reader".to_owned(), 10), ("auditor".to_owned(), 30)].into();
        assert_eq!(allowance(&by_role, &p(&[Role::Reader])), Some(10));
        assert_eq!(
            allowance(&by_role, &p(&[Role::Reader, Role::Auditor])),
            Some(30)
        );
        assert_eq!(
            allowance(&by_role, &p(&[Role::Reader, Role::Ingester])),
            None
        );
        let zero: BTreeMap<String, u32> = [("reader".to_owned(), 0)].into();
        assert_eq!(allowance(&zero, &p(&[Role::Reader])), None);
        assert_eq!(allowance(&by_role, &p(&[])), None);
    }
}
