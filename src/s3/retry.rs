//! Retries: which failures are worth another try, how long to wait before it, and one
//! state machine ([`Retry`]) that every request kind keeps: listings and small calls,
//! downloads (with their resumes), part uploads and the restore's PUTs.

use std::time::Duration;

use crate::s3::S3Error;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
        }
    }

    /// Exponential backoff with full jitter: a uniform wait in `[0, min(cap, base * 2^n))`,
    /// so many clients slowed down by one server do not retry in step.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(20))
            .min(self.cap)
            .as_millis() as u64;
        Duration::from_millis(if ceiling == 0 { 0 } else { random % ceiling })
    }
}

/// HTTP statuses and S3 error codes that say "try again later".
pub fn is_transient(status: u16, code: &str) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
        || matches!(
            code,
            "SlowDown" | "InternalError" | "RequestTimeout" | "ServiceUnavailable"
        )
}

/// The retry state of one request (or of one object's reads, resumes included): the
/// attempts spent against the policy's budget.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    policy: RetryPolicy,
    attempts: u32,
}

impl Retry {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            attempts: 0,
        }
    }

    /// Retries spent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After `e`: the wait before trying again (counting the retry), or `None` when `e`
    /// is final or the budget is spent.
    pub fn next_wait(&mut self, e: &S3Error, random: u64) -> Option<Duration> {
        if !e.is_transient() || self.attempts >= self.policy.max_retries {
            return None;
        }
        let wait = self.policy.delay(self.attempts, random);
        self.attempts += 1;
        Some(wait)
    }
}

impl Retry {
    /// Counts a retry of what failed in a way that is safe to try again (e.g. a Complete
    /// settled as not done): the wait before it, or `None` when the budget is spent.
    pub fn next_wait_anyway(&mut self, random: u64) -> Option<Duration> {
        if self.attempts >= self.policy.max_retries {
            return None;
        }
        let wait = self.policy.delay(self.attempts, random);
        self.attempts += 1;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::new(5);
        assert_eq!(p.delay(0, 199).as_millis(), 199);
        assert_eq!(p.delay(0, 200).as_millis(), 0);
        assert_eq!(p.delay(3, 1599).as_millis(), 1599);
        assert!(p.delay(30, u64::MAX).as_millis() < 20_000);
        assert_eq!(p.delay(4, 0), Duration::ZERO);
    }

    #[test]
    fn transient_failures() {
        assert!(is_transient(503, "SlowDown"));
        assert!(is_transient(200, "InternalError"));
        assert!(!is_transient(403, "AccessDenied"));
        assert!(!is_transient(404, "NoSuchKey"));
        assert!(!is_transient(400, "InvalidArgument"));
    }

    #[test]
    fn the_budget_is_spent_once() {
        let slow = S3Error::Status {
            status: 503,
            code: "SlowDown".into(),
            message: String::new(),
        };
        let denied = S3Error::Status {
            status: 403,
            code: "AccessDenied".into(),
            message: String::new(),
        };
        let mut r = Retry::new(RetryPolicy::new(2));
        assert!(r.next_wait(&denied, 1).is_none());
        assert_eq!(r.attempts(), 0);
        assert!(r.next_wait(&slow, 1).is_some());
        assert!(r.next_wait(&slow, 1).is_some());
        assert!(r.next_wait(&slow, 1).is_none());
        assert_eq!(r.attempts(), 2);
    }
}
