//! Restart pacing for one longrun: exponential back-off with jitter, forgiven after a stable run, and
//! a hard bound on consecutive restarts. Pure arithmetic (the clock is passed in), so it is tested
//! without processes.

use std::time::Duration;

use crate::config::Backoff;

/// What to do after an exit that the restart policy wants restarted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Restart after `delay`; this is consecutive restart number `attempt` (from 1).
    Restart { delay: Duration, attempt: u32 },
    /// `max_restarts` consecutive restarts were used up.
    GiveUp { restarts: u32 },
}

pub struct Restarts {
    config: Backoff,
    /// Consecutive restarts since the last stable run.
    attempts: u32,
    rng: u64,
}

impl Restarts {
    pub fn new(config: Backoff, seed: u64) -> Self {
        Self {
            config,
            attempts: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// Called after each exit that should be restarted; `uptime` is how long that run lasted.
    pub fn after_exit(&mut self, uptime: Duration) -> Decision {
        if uptime >= self.config.stable_after {
            self.attempts = 0;
        }
        if let Some(max) = self.config.max_restarts
            && self.attempts >= max
        {
            return Decision::GiveUp {
                restarts: self.attempts,
            };
        }
        self.attempts += 1;
        let delay = self.jittered(self.base_delay(self.attempts));
        Decision::Restart {
            delay,
            attempt: self.attempts,
        }
    }

    /// `initial * 2^(attempt-1)`, capped at `max`.
    fn base_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.max)
    }

    /// Multiplies by a random factor in `[1 - jitter, 1]`, so many services failing together do not
    /// restart in lockstep, and the cap stays a cap.
    fn jittered(&mut self, delay: Duration) -> Duration {
        if self.config.jitter <= 0.0 {
            return delay;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(1.0 - self.config.jitter * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GiveUp;

    fn config(jitter: f64, max_restarts: Option<u32>) -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter,
            stable_after: Duration::from_secs(10),
            max_restarts,
            give_up: GiveUp::Shutdown,
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::Restart { delay, .. } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut r = Restarts::new(config(0.0, None), 1);
        let quick = Duration::from_millis(5);
        let got: Vec<u128> = (0..6)
            .map(|_| delay(r.after_exit(quick)).as_millis())
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn a_stable_run_resets_the_delay_and_the_count() {
        let mut r = Restarts::new(config(0.0, Some(2)), 1);
        let quick = Duration::from_millis(5);
        r.after_exit(quick);
        assert_eq!(delay(r.after_exit(quick)), Duration::from_millis(200));
        assert_eq!(
            delay(r.after_exit(Duration::from_secs(10))),
            Duration::from_millis(100)
        );
        assert!(matches!(
            r.after_exit(quick),
            Decision::Restart { attempt: 2, .. }
        ));
        assert_eq!(r.after_exit(quick), Decision::GiveUp { restarts: 2 });
    }

    #[test]
    fn max_restarts_bounds_restarts_exactly() {
        let mut r = Restarts::new(config(0.5, Some(3)), 7);
        let quick = Duration::ZERO;
        for n in 1..=3 {
            assert!(
                matches!(r.after_exit(quick), Decision::Restart { attempt, .. } if attempt == n)
            );
        }
        assert_eq!(r.after_exit(quick), Decision::GiveUp { restarts: 3 });
        assert_eq!(r.after_exit(quick), Decision::GiveUp { restarts: 3 });
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let mut r = Restarts::new(config(0.5, None), 42);
        for attempt in 1..50u32 {
            let got = delay(r.after_exit(Duration::ZERO));
            let base = r.base_delay(attempt);
            assert!(
                got <= base && got >= base.mul_f64(0.5),
                "{got:?} vs {base:?}"
            );
        }
    }
}
