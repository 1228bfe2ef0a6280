//! Failed authentication, limited per client before it costs a durable write.
//!
//! Every refused request is audited, and an audit record is a synchronous,
//! durable write: a client sending bad tokens as fast as it can would turn
//! that into a write amplifier. So each client address gets
//! `audit.denials_per_minute` individually recorded 401s; past that it gets
//! 429 with `Retry-After` and no write of its own, and the refusals it was
//! given are counted in memory and written as one summary record per client
//! (`auth.denied.summary`: how many, first and last time) every
//! `audit.denial_summary_secs`, and when the server stops. Nothing is lost
//! but the per-request detail of a flood.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use sovra_audit::{AuditEvent, AuditSink};
use sovra_limits::{Decision, LimitStore, MemoryLimits};

/// What to do with one failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer 401 and record it, as any request.
    Record,
    /// Answer 429; counted into the client's next summary record.
    Limited { retry_after_secs: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suppressed {
    count: u64,
    first_us: i64,
    last_us: i64,
}

pub struct DenialLimiter {
    /// Per client address, in this process: a flood is answered where it
    /// arrives.
    rates: MemoryLimits,
    per_minute: u32,
    suppressed: Mutex<HashMap<String, Suppressed>>,
}

impl DenialLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            rates: MemoryLimits::new(),
            per_minute: per_minute.max(1),
            suppressed: Mutex::new(HashMap::new()),
        }
    }

    /// Decides for one failed authentication from `client`.
    pub async fn check(&self, client: &str) -> Verdict {
        let retry_after = match self
            .rates
            .take(client, self.per_minute, Duration::from_secs(60))
            .await
        {
            Ok(Decision::Allowed) => return Verdict::Record,
            Ok(Decision::Refused { retry_after }) => retry_after,
            // The memory store fails only on a poisoned lock: record then.
            Err(e) => {
                tracing::error!(error = %e, "the denial limiter failed; the refusal is recorded");
                return Verdict::Record;
            }
        };
        let now_us = chrono::Utc::now().timestamp_micros();
        if let Ok(mut map) = self.suppressed.lock() {
            let e = map.entry(client.to_owned()).or_insert(Suppressed {
                count: 0,
                first_us: now_us,
                last_us: now_us,
            });
            e.count += 1;
            e.last_us = now_us;
        }
        Verdict::Limited {
            retry_after_secs: retry_after.as_secs().max(1),
        }
    }

    /// Writes one summary record per client refused since the last call,
    /// and forgets clients whose limit has recovered. Returns how many
    /// refusals the records cover.
    pub async fn flush(&self, audit: &dyn AuditSink) -> u64 {
        let drained: Vec<(String, Suppressed)> = match self.suppressed.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => Vec::new(),
        };
        self.rates.forget_idle();
        let mut covered = 0;
        for (client, s) in drained {
            let mut event = AuditEvent::new(uuid::Uuid::now_v7().to_string(), "*", "*");
            event.action = "auth.denied.summary".into();
            event.status = 429;
            event.reason = Some("rate_limited".into());
            event.client_addr = Some(client);
            event.details = json!({
                "refused": s.count,
                "first_us": s.first_us,
                "last_us": s.last_us,
            });
            match audit.append(event).await {
                Ok(_) => covered += s.count,
                Err(e) => {
                    tracing::error!(error = %e, refused = s.count, "a denial summary was not recorded")
                }
            }
        }
        covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_client_has_its_own_allowance() {
        let l = DenialLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(l.check("10.0.0.1").await, Verdict::Record);
        }
        assert!(
            matches!(l.check("10.0.0.1").await, Verdict::Limited { retry_after_secs } if retry_after_secs >= 1)
        );
        assert!(matches!(l.check("10.0.0.1").await, Verdict::Limited { .. }));
        assert_eq!(l.check("10.0.0.2").await, Verdict::Record);
        let map = l.suppressed.lock().map(|m| m.clone()).unwrap_or_default();
        assert_eq!(map.get("10.0.0.1").map(|s| s.count), Some(2));
        assert!(!map.contains_key("10.0.0.2"));
    }
}
