//! Decoding Zendesk's answers (pages, job statuses, error bodies, dates,
//! rate-limit seconds) must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zd_retention::zendesk::model;

fuzz_target!(|data: &[u8]| {
    let _ = model::decode_deleted_tickets(data);
    if let Ok(job) = model::decode_job_status(data) {
        let _ = (job.status.is_terminal(), job.results.succeeded(), job.status.to_string());
    }
    let _ = model::decode_job_statuses(data);
    let text = String::from_utf8_lossy(data);
    let body = model::ApiErrorBody::parse(&text);
    let _ = body.to_string();
    let _ = model::snippet(&text, 120);
    let _ = model::parse_zendesk_time(&text);
    let _ = zd_retention::zendesk::pacing::parse_seconds(&text);
});
