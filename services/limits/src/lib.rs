//! Shared limits: how many requests a key may make per period (the generic
//! cell rate algorithm, GCRA) and how much it may spend per UTC day (a
//! counter per day). Two stores with one contract, tested by one suite:
//! [`MemoryLimits`] for one process (the embedded default; `governor` does
//! the GCRA) and [`RedisLimits`] for every replica at once (a Lua script
//! runs the GCRA atomically inside Redis, so two gateways share one
//! allowance).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("limits store (Redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("limits store: {0}")]
    Store(String),
}

/// The answer to one request against a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the earliest time a retry can succeed.
    Refused {
        retry_after: Duration,
    },
}

#[async_trait]
pub trait LimitStore: Send + Sync {
    /// One request by `key` against `limit` per `period` (bursts up to
    /// `limit` allowed, then one per `period / limit`).
    async fn take(&self, key: &str, limit: u32, period: Duration) -> Result<Decision, LimitsError>;
    /// Adds `amount` to `key`'s counter for the current UTC day; returns the
    /// new total.
    async fn add_today(&self, key: &str, amount: u64) -> Result<u64, LimitsError>;
    /// `key`'s counter for the current UTC day.
    async fn today(&self, key: &str) -> Result<u64, LimitsError>;
    /// For logs and metrics.
    fn backend(&self) -> &'static str;
}

fn day() -> String {
    chrono::Utc::now().format("%Y%m%d").to_string()
}

/// Seconds until the next UTC midnight, when daily counters start over.
pub fn until_tomorrow() -> Duration {
    let now = chrono::Utc::now();
    let tomorrow = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    tomorrow
        .and_then(|t| (t - now).to_std().ok())
        .unwrap_or(Duration::from_secs(86_400))
}

/// One GCRA limiter per (limit, period in ms), keyed by caller.
type Rates = HashMap<(u32, u64), std::sync::Arc<DefaultKeyedRateLimiter<String>>>;

/// Limits held in this process.
#[derive(Default)]
pub struct MemoryLimits {
    rates: Mutex<Rates>,
    days: Mutex<HashMap<String, (String, u64)>>,
}

impl MemoryLimits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets keys whose allowance has fully recovered, so memory follows
    /// the callers of the last period, not every caller ever seen.
    pub fn forget_idle(&self) {
        if let Ok(rates) = self.rates.lock() {
            for limiter in rates.values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }

    fn limiter(
        &self,
        limit: u32,
        period: Duration,
    ) -> Result<std::sync::Arc<DefaultKeyedRateLimiter<String>>, LimitsError> {
        let n = NonZeroU32::new(limit).ok_or_else(|| LimitsError::Store("a limit of 0".into()))?;
        let quota = Quota::with_period(period / limit)
            .ok_or_else(|| LimitsError::Store("a period of 0".into()))?
            .allow_burst(n);
        let mut rates = self
            .rates
            .lock()
            .map_err(|_| LimitsError::Store("poisoned".into()))?;
        Ok(rates
            .entry((limit, period.as_millis() as u64))
            .or_insert_with(|| std::sync::Arc::new(RateLimiter::keyed(quota)))
            .clone())
    }
}

#[async_trait]
impl LimitStore for MemoryLimits {
    async fn take(&self, key: &str, limit: u32, period: Duration) -> Result<Decision, LimitsError> {
        let limiter = self.limiter(limit, period)?;
        Ok(match limiter.check_key(&key.to_owned()) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Refused {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        })
    }

    async fn add_today(&self, key: &str, amount: u64) -> Result<u64, LimitsError> {
        let today = day();
        let mut days = self
            .days
            .lock()
            .map_err(|_| LimitsError::Store("poisoned".into()))?;
        let entry = days.entry(key.to_owned()).or_insert((today.clone(), 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        entry.1 = entry.1.saturating_add(amount);
        Ok(entry.1)
    }

    async fn today(&self, key: &str) -> Result<u64, LimitsError> {
        let today = day();
        let days = self
            .days
            .lock()
            .map_err(|_| LimitsError::Store("poisoned".into()))?;
        Ok(days
            .get(key)
            .filter(|(d, _)| *d == today)
            .map_or(0, |(_, n)| *n))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// GCRA in one atomic step: KEYS[1] holds the theoretical arrival time (ms);
/// ARGV[1] is the emission interval, ARGV[2] the burst tolerance (ms).
/// Returns -1 when allowed, else the milliseconds until a retry can succeed.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
    return tat - now - tolerance
end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', next - now + 1)
return -1
"#;

/// INCRBY on today's counter, kept two days.
const ADD_TODAY: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return n
"#;

/// Limits shared by every replica through one Redis.
pub struct RedisLimits {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    gcra: redis::Script,
    add_today: redis::Script,
}

impl RedisLimits {
    /// Connects to `url`; every key starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, LimitsError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            gcra: redis::Script::new(GCRA),
            add_today: redis::Script::new(ADD_TODAY),
        })
    }

    fn day_key(&self, key: &str) -> String {
        format!("{}:day:{}:{key}", self.prefix, day())
    }
}

#[async_trait]
impl LimitStore for RedisLimits {
    async fn take(&self, key: &str, limit: u32, period: Duration) -> Result<Decision, LimitsError> {
        if limit == 0 {
            return Err(LimitsError::Store("a limit of 0".into()));
        }
        let interval = (period.as_millis() as u64 / u64::from(limit)).max(1);
        let tolerance = interval * u64::from(limit - 1);
        let mut conn = self.conn.clone();
        let wait: i64 = self
            .gcra
            .key(format!(
                "{}:rate:{limit}:{}:{key}",
                self.prefix,
                period.as_millis()
            ))
            .arg(interval)
            .arg(tolerance)
            .invoke_async(&mut conn)
            .await?;
        Ok(if wait < 0 {
            Decision::Allowed
        } else {
            Decision::Refused {
                retry_after: Duration::from_millis(wait as u64),
            }
        })
    }

    async fn add_today(&self, key: &str, amount: u64) -> Result<u64, LimitsError> {
        let mut conn = self.conn.clone();
        let n: u64 = self
            .add_today
            .key(self.day_key(key))
            .arg(amount)
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn today(&self, key: &str) -> Result<u64, LimitsError> {
        let mut conn = self.conn.clone();
        let n: Option<u64> = redis::cmd("GET")
            .arg(self.day_key(key))
            .query_async(&mut conn)
            .await?;
        Ok(n.unwrap_or(0))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod contract {
    //! One suite for every store.
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    async fn suite(store: &dyn LimitStore) {
        let key = format!("k-{}", uuid::Uuid::now_v7().simple());
        let minute = Duration::from_secs(60);
        // A burst up to the limit, then refusals naming a wait.
        for i in 0..3 {
            assert_eq!(
                store.take(&key, 3, minute).await.unwrap(),
                Decision::Allowed,
                "#{i}"
            );
        }
        match store.take(&key, 3, minute).await.unwrap() {
            Decision::Refused { retry_after } => {
                assert!(
                    retry_after > Duration::from_secs(5) && retry_after <= Duration::from_secs(20),
                    "{retry_after:?}"
                )
            }
            Decision::Allowed => panic!("the fourth request in a minute passed a limit of 3"),
        }
        // Keys are independent.
        let other = format!("{key}-other");
        assert_eq!(
            store.take(&other, 3, minute).await.unwrap(),
            Decision::Allowed
        );
        // A short period refills.
        let fast = format!("{key}-fast");
        let period = Duration::from_millis(300);
        assert_eq!(
            store.take(&fast, 1, period).await.unwrap(),
            Decision::Allowed
        );
        assert!(matches!(
            store.take(&fast, 1, period).await.unwrap(),
            Decision::Refused { .. }
        ));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            store.take(&fast, 1, period).await.unwrap(),
            Decision::Allowed
        );
        // Daily counters add up per key.
        assert_eq!(store.today(&key).await.unwrap(), 0);
        assert_eq!(store.add_today(&key, 40).await.unwrap(), 40);
        assert_eq!(store.add_today(&key, 2).await.unwrap(), 42);
        assert_eq!(store.today(&key).await.unwrap(), 42);
        assert_eq!(store.today(&other).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        suite(&MemoryLimits::new()).await;
    }

    /// Against the Redis on 127.0.0.1:6379 (`SOVRA_TEST_REDIS_URL` to change
    /// it); it runs on every development and CI machine.
    #[tokio::test]
    async fn redis_store_meets_the_contract() {
        let url = std::env::var("SOVRA_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("sovra-test-{}", uuid::Uuid::now_v7().simple());
        let store = RedisLimits::connect(&url, &prefix)
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} is required for this test: {e}"));
        suite(&store).await;
    }
}
