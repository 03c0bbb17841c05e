//! Config parsing and validation must never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = zd_retention::config::Config::parse(text, "fuzz.toml") {
            // every error renders, naming at least one problem
            let shown = e.to_string();
            assert!(!e.problems.is_empty() && shown.contains("fuzz.toml"));
        }
        let _ = zd_retention::config::normalise_cron(text);
        let _ = text.parse::<zd_retention::quota::RateQuota>();
    }
});
