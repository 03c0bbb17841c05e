//! Durations as people write them in a config: `7d`, `12h`, `1h 30m`,
//! `250ms`. At most the two largest units, so a printed age reads at a
//! glance; humantime still parses every form printed here. And the short
//! freshness windows, down to microseconds.

use std::time::Duration;

/// The longest duration a config key or an argument may give: 100 years
/// (`100y`, as humantime reads it). No setting needs more, and a longer one
/// overflows a clock it is added to (`Instant + Duration` panics past
/// about 292 billion years, chrono's times past 262,000).
pub const LONGEST: Duration = Duration::from_secs(3_155_760_000);

/// `7d`, `12h`, `1h 30m`, `2m 5s`, `250ms`, `0s`.
pub fn duration(d: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let secs = d.as_secs();
    if secs == 0 {
        let ms = d.subsec_millis();
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    let mut rest = secs;
    let mut parts = Vec::new();
    for (size, unit) in UNITS {
        let n = rest / size;
        if n > 0 {
            parts.push(format!("{n}{unit}"));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
        // a gap ends the reading: 1d 0h 5m is written 1d
        if !parts.is_empty() && n == 0 {
            break;
        }
    }
    parts.join(" ")
}

/// A freshness window as people read it: microseconds below a millisecond.
pub fn window_text(window: Duration) -> String {
    if window < Duration::from_millis(1) {
        format!("{} µs", window.as_micros())
    } else if window < Duration::from_secs(1) {
        format!("{:.1} ms", window.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", window.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_in_a_config() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (90, "1m 30s"),
            (3_600, "1h"),
            (5_400, "1h 30m"),
            (43_200, "12h"),
            (7 * 86_400, "7d"),
            (86_400 + 3_600, "1d 1h"),
            (86_400 + 300, "1d"),
            (30 * 86_400 + 59, "30d"),
        ];
        for (secs, text) in cases {
            assert_eq!(duration(Duration::from_secs(secs)), text, "{secs}");
        }
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        // what is printed parses back to at most the value
        for (secs, text) in cases {
            let back = humantime::parse_duration(text).unwrap();
            assert!(back <= Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn the_longest_duration_is_what_humantime_reads_as_100_years() {
        assert_eq!(humantime::parse_duration("100y").unwrap(), LONGEST);
    }
}
