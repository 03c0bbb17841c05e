//! Rate quotas written as `"N/window"` (`"10/1m"`, `"200/1m"`, `"10/100ms"`).
//!
//! One type serves the client's pacing and the sandbox's enforcement, so that
//! tests and benchmarks can compress time by writing a shorter window. This
//! module owns the parsing and the conversion to governor; it never sleeps.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// At most `count` requests in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    pub count: NonZeroU32,
    pub window: Duration,
}

impl RateQuota {
    pub fn new(count: u32, window: Duration) -> Option<Self> {
        let count = NonZeroU32::new(count)?;
        // the spacing between two requests must not round to zero
        (!(window / count.get()).is_zero()).then_some(Self { count, window })
    }

    pub fn per_minute(count: u32) -> Option<Self> {
        Self::new(count, Duration::from_secs(60))
    }

    /// The same quota with its window divided by `factor` (the sandbox's
    /// `--time-scale`): `10/1m` at 60 becomes `10/1s`.
    pub fn scaled(self, factor: f64) -> Self {
        let window = self.window.div_f64(factor.max(1e-9));
        Self {
            count: self.count,
            window: window.max(Duration::from_micros(1)),
        }
    }

    /// The time between two requests when they are spread evenly.
    pub fn spacing(&self) -> Duration {
        self.window / self.count.get()
    }

    /// A governor quota that lets through at most `count` requests in any
    /// window of `window`: a burst of one and one more every `spacing`.
    pub fn to_governor(&self) -> governor::Quota {
        // `new` refuses a spacing that rounds to zero; `scaled` can still
        // shrink one, so a nanosecond is the floor (never a panic)
        let period = self.spacing().max(Duration::from_nanos(1));
        governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::MIN)
    }

    /// A governor quota with a burst of `count`, refilled one per `spacing`.
    /// Alone it allows almost twice the count in the first window (governor
    /// refills while the burst is spent); it is only safe together with a
    /// hold-off until the server's window resets once its `remaining` reaches
    /// zero, which is what `Pacer` does with Zendesk's headers.
    pub fn to_governor_burst(&self) -> governor::Quota {
        self.to_governor().allow_burst(self.count)
    }
}

impl fmt::Display for RateQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, crate::human::duration(self.window))
    }
}

impl FromStr for RateQuota {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "write it as \"N/window\", for example \"10/1m\" or \"10/100ms\"";
        let (count, window) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a quota: {hint}"))?;
        let count: u32 = count.trim().parse().map_err(|_| {
            format!(
                "{s:?}: {:?} is not a positive whole number: {hint}",
                count.trim()
            )
        })?;
        let window_text = window.trim();
        // "10/m" and "10/s" read naturally; humantime needs a number first.
        let window_text = match window_text {
            "s" | "m" | "h" | "min" => format!("1{window_text}"),
            other => other.to_string(),
        };
        let window = humantime::parse_duration(&window_text).map_err(|e| {
            format!(
                "{s:?}: window {:?} is not a duration ({e}): {hint}",
                window.trim()
            )
        })?;
        RateQuota::new(count, window)
            .ok_or_else(|| format!("{s:?}: count and window must both be above zero, and the window long enough that window/count does not round to zero: {hint}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minutes_and_milliseconds() {
        let q: RateQuota = "10/1m".parse().unwrap();
        assert_eq!(q.count.get(), 10);
        assert_eq!(q.window, Duration::from_secs(60));
        assert_eq!(q.spacing(), Duration::from_secs(6));
        let q: RateQuota = "10/100ms".parse().unwrap();
        assert_eq!(q.window, Duration::from_millis(100));
        let q: RateQuota = "5/m".parse().unwrap();
        assert_eq!(q.window, Duration::from_secs(60));
    }

    #[test]
    fn refuses_zero_negative_and_garbage() {
        for bad in ["0/1m", "-1/1m", "10", "10/0s", "ten/1m", "10/forever", ""] {
            let err = bad.parse::<RateQuota>().unwrap_err();
            assert!(err.contains("N/window"), "{bad}: {err}");
        }
    }

    #[test]
    fn scaling_divides_the_window() {
        let q = RateQuota::per_minute(10).unwrap().scaled(60.0);
        assert_eq!(q.window, Duration::from_secs(1));
        assert_eq!(q.to_string(), "10/1s");
    }
}
