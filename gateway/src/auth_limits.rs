//! Limits on `/v1/auth/*`, where every attempt costs an argon2id hash:
//! attempts per client IP address and per user name (keyed token buckets),
//! answered with `rate_limited` and how long to wait.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Keys kept before the limiters forget the ones that are full again.
const FORGET_ABOVE: usize = 10_000;

pub struct AuthLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<String>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn check<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Duration> {
    if limiter.len() > FORGET_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

impl AuthLimits {
    pub fn new(per_ip_per_minute: u32, per_user_per_minute: u32) -> AuthLimits {
        AuthLimits {
            per_ip: governor::RateLimiter::keyed(per_minute(per_ip_per_minute)),
            per_user: governor::RateLimiter::keyed(per_minute(per_user_per_minute)),
        }
    }

    /// One attempt from `ip`; `Err` is how long until the next is allowed.
    pub fn ip(&self, ip: IpAddr) -> Result<(), Duration> {
        check(&self.per_ip, &ip)
    }

    /// One attempt for `user`; `Err` is how long until the next is allowed.
    pub fn user(&self, user: &str) -> Result<(), Duration> {
        check(&self.per_user, &user.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_and_each_name_has_its_own_budget() {
        let limits = AuthLimits::new(2, 1);
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        assert!(limits.ip(a).is_ok() && limits.ip(a).is_ok());
        let wait = limits.ip(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(limits.ip(b).is_ok(), "another address is not limited");
        assert!(limits.user("alice").is_ok());
        assert!(limits.user("alice").is_err());
        assert!(limits.user("bob").is_ok(), "another name is not limited");
    }
}
