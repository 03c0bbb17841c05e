//! The command line's date and duration arguments (`--since`, `--until`,
//! the sandbox's delays and time scale) must never panic, whatever the
//! text and whatever the clock: refused with a message, or a time between
//! 1970 and 9999 and a duration of at most 100 years.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zd_retention::cli::{parse_duration_arg, parse_time_at, parse_time_scale};

fuzz_target!(|data: &[u8]| {
    // the first eight bytes pick the clock, the rest is the argument
    let (clock, rest) = data.split_at(data.len().min(8));
    let mut secs = [0u8; 8];
    secs[..clock.len()].copy_from_slice(clock);
    let secs = i64::from_le_bytes(secs).rem_euclid(253_402_300_799);
    let Some(now) = chrono::DateTime::from_timestamp(secs, 0) else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(t) = parse_time_at(text, now) {
            assert!(t >= chrono::DateTime::UNIX_EPOCH);
        }
        if let Ok(d) = parse_duration_arg(text) {
            assert!(d <= zd_retention::human::LONGEST);
        }
        if let Ok(f) = parse_time_scale(text) {
            assert!(f.is_finite() && f > 0.0);
        }
    }
});
