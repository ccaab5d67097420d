//! H4: time during which Redis itself was unreachable does not count
//! toward device or node deadlines.
//!
//! Gateways cannot move heartbeat deadlines or their node lease while
//! Redis is down, so after an outage longer than the node lease (10 s) or
//! the heartbeat timeout (30 s) every deadline in Redis has lapsed,
//! although every socket is still open. A leader that swept then would
//! show every connected user offline until the gateways refreshed. So
//! each node keeps, for all its leaders, the moment Redis became
//! reachable again ([`Reachability`]), and its leaders skip the
//! heartbeat (A5) and node lease (H2) expiries until the gateways have
//! had a full refresh interval of connectivity since
//! ([`AggregatorConfig::gateway_refresh_interval`](crate::AggregatorConfig)).
//! Gateways refresh at once when Redis is back, so by then every live
//! device has a fresh deadline and only really dead ones are swept.
//!
//! "Reachable again" is seen two ways:
//!
//! - this node's own Redis calls (lease attempts, renewals, sweep reads,
//!   stream reads) failed and then one succeeded;
//! - Redis restarted recently (`INFO server` uptime, read at every
//!   takeover of a shard that has users, i.e. Redis came back with its
//!   data): covers a leader that starts or takes a shard over after an
//!   outage it did not see itself.
//!
//! A node whose gateways died during the outage still has them swept as
//! soon as the hold-off ends: their leases lapsed long before, so their
//! users show offline about one refresh interval (10 s) after Redis
//! returns, within H4's 15 s.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When Redis was last seen reachable again, shared by a node's leaders.
#[derive(Debug)]
pub(crate) struct Reachability {
    hold_off: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A call failed and none succeeded since.
    failing: bool,
    /// The first success after the last failure, or the last Redis
    /// restart this node learnt of, whichever is later.
    back_since: Option<Instant>,
}

impl Reachability {
    /// `hold_off`: how long after Redis is back the sweeps wait (the
    /// gateways' refresh interval).
    pub(crate) fn new(hold_off: Duration) -> Self {
        Self {
            hold_off,
            state: Mutex::new(State::default()),
        }
    }

    /// A Redis call failed (unreachable, timed out).
    pub(crate) fn failed(&self) {
        let mut state = self.lock();
        if !state.failing {
            tracing::info!("redis unreachable: heartbeat and node sweeps are held off");
        }
        state.failing = true;
    }

    /// A Redis call succeeded.
    pub(crate) fn succeeded(&self) {
        self.succeeded_at(Instant::now());
    }

    fn succeeded_at(&self, now: Instant) {
        let mut state = self.lock();
        if state.failing {
            state.failing = false;
            state.back_since = Some(now);
            tracing::info!(
                hold_off = ?self.hold_off,
                "redis reachable again: sweeps resume after the hold-off"
            );
        }
    }

    /// Redis reported `uptime`: a server that started within the hold-off
    /// counts as back since it started.
    pub(crate) fn observe_uptime(&self, uptime: Duration) {
        self.observe_uptime_at(uptime, Instant::now());
    }

    fn observe_uptime_at(&self, uptime: Duration, now: Instant) {
        if uptime >= self.hold_off {
            return;
        }
        let Some(started) = now.checked_sub(uptime) else {
            return;
        };
        let mut state = self.lock();
        if state.back_since.is_none_or(|since| since < started) {
            tracing::info!(?uptime, "redis restarted recently: sweeps held off");
            state.back_since = Some(started);
        }
    }

    /// Until when heartbeat and node lease expiries must wait, if they
    /// must: `None` once the gateways have had `hold_off` of connectivity
    /// (or Redis never failed). While Redis is failing, one hold-off
    /// from now (it moves on until Redis is back).
    pub(crate) fn hold_off_until(&self) -> Option<Instant> {
        self.hold_off_until_at(Instant::now())
    }

    fn hold_off_until_at(&self, now: Instant) -> Option<Instant> {
        let state = self.lock();
        if state.failing {
            return Some(now + self.hold_off);
        }
        state
            .back_since
            .map(|since| since + self.hold_off)
            .filter(|until| *until > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD_OFF: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn h4_sweeps_wait_a_hold_off_after_redis_is_back() {
        let t0 = Instant::now();
        let r = Reachability::new(HOLD_OFF);
        assert_eq!(r.hold_off_until_at(t0), None, "never failed: sweep");
        r.succeeded_at(t0);
        assert_eq!(r.hold_off_until_at(t0), None, "success without failure");

        r.failed();
        let t60 = t0 + secs(60);
        assert_eq!(
            r.hold_off_until_at(t60),
            Some(t60 + HOLD_OFF),
            "held while failing"
        );
        r.succeeded_at(t60);
        // Later successes do not move the return.
        r.succeeded_at(t60 + secs(1));
        assert_eq!(r.hold_off_until_at(t60 + secs(9)), Some(t60 + HOLD_OFF));
        assert_eq!(
            r.hold_off_until_at(t60 + HOLD_OFF),
            None,
            "a full hold-off after the return"
        );
    }

    #[test]
    fn h4_a_recent_redis_restart_counts_as_an_outage() {
        let now = Instant::now() + secs(100);
        let r = Reachability::new(HOLD_OFF);
        r.observe_uptime_at(secs(3600), now);
        assert_eq!(
            r.hold_off_until_at(now),
            None,
            "a long-running redis holds nothing off"
        );
        r.observe_uptime_at(secs(4), now);
        assert_eq!(
            r.hold_off_until_at(now),
            Some(now + secs(6)),
            "restarted 4 s ago"
        );
        // An older restart never moves the hold-off earlier.
        r.observe_uptime_at(secs(8), now);
        assert_eq!(r.hold_off_until_at(now), Some(now + secs(6)));
    }
}
