//! Time as the policy, the memory and the queue count it: whole seconds
//! since the Unix epoch, as `i64` (portable SQL `BIGINT`). The policy never
//! reads the clock; callers at the edges pass `now` in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; times before it count as 0, times beyond
/// `i64` as `i64::MAX`.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// [`unix_seconds`] of the current time (for the edges that own the clock).
pub fn unix_now() -> i64 {
    unix_seconds(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_since_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(unix_now() > 1_700_000_000);
    }
}
