//! The sandbox's contract, checked over plain HTTP with reqwest and
//! `serde_json::Value` (not the client's types), as a third-party client
//! would see it.

use std::time::Duration;

use serde_json::Value;
use zd_retention::sandbox::{Faults, Sandbox, SandboxAuth, SandboxOptions, generate_tickets};

use crate::helpers::{fast_sandbox_options, sandbox};

/// Moves tokio's clock, which the sandbox's jobs run on, `by` ahead at
/// once: paused, advanced, resumed (a current-thread runtime). Never less
/// than `by` passes, and no wall time is waited for; the clock runs on
/// from there, so requests after it see a clock that only moved forward.
async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(url: &str) -> reqwest::Response {
    http()
        .get(url)
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
        .unwrap()
}

async fn get_json(url: &str) -> Value {
    let response = get(url).await;
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn cursor_walk_covers_every_ticket_once_in_id_order() {
    let sb = sandbox(1000).await;
    let mut url = format!(
        "{}/api/v2/deleted_tickets.json?page[size]=100",
        sb.base_url()
    );
    let mut ids = Vec::new();
    let mut requests = 0;
    loop {
        let page = get_json(&url).await;
        requests += 1;
        let tickets = page["deleted_tickets"].as_array().unwrap();
        assert!(tickets.len() <= 100);
        for t in tickets {
            ids.push(t["id"].as_u64().unwrap());
            assert!(t["deleted_at"].as_str().unwrap().ends_with('Z'));
            assert!(t["actor"]["id"].is_u64());
            assert!(t.get("previous_state").is_some());
        }
        if !page["meta"]["has_more"].as_bool().unwrap() {
            assert!(page["links"]["next"].is_null());
            break;
        }
        url = page["links"]["next"].as_str().unwrap().to_string();
    }
    assert_eq!(requests, 10);
    assert_eq!(ids.len(), 1000);
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids come once each, in id order");
    assert_eq!(sb.count("list"), 10);
}

#[tokio::test]
async fn sorting_by_deleted_at_holds_across_cursor_pages() {
    let sb = sandbox(300).await;
    let mut url = format!(
        "{}/api/v2/deleted_tickets?page[size]=50&sort_by=deleted_at&sort_order=desc",
        sb.base_url()
    );
    let mut times = Vec::new();
    loop {
        let page = get_json(&url).await;
        for t in page["deleted_tickets"].as_array().unwrap() {
            times.push(t["deleted_at"].as_str().unwrap().to_string());
        }
        match page["links"]["next"].as_str() {
            Some(next) if page["meta"]["has_more"] == true => url = next.to_string(),
            _ => break,
        }
    }
    assert_eq!(times.len(), 300);
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "descending by deleted_at"
    );
}

#[tokio::test]
async fn offset_pagination_counts_and_stops_at_page_100() {
    let sb = sandbox(250).await;
    let page = get_json(&format!(
        "{}/api/v2/deleted_tickets.json?per_page=100&page=3",
        sb.base_url()
    ))
    .await;
    assert_eq!(page["count"], 250);
    assert_eq!(page["deleted_tickets"].as_array().unwrap().len(), 50);
    assert!(page["next_page"].is_null());
    assert!(page["previous_page"].as_str().unwrap().contains("page=2"));
    let response = get(&format!(
        "{}/api/v2/deleted_tickets.json?per_page=100&page=101",
        sb.base_url()
    ))
    .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn credentials_are_required() {
    let sb = sandbox(10).await;
    let url = format!("{}/api/v2/deleted_tickets.json", sb.base_url());
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    // a password without the "/token" user is not API-token auth
    let r = http()
        .get(&url)
        .basic_auth("a@b.c", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http().get(&url).bearer_auth("oauth").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let strict = Sandbox::start_local(SandboxOptions {
        auth: SandboxAuth::Token("right".into()),
        ..fast_sandbox_options(1)
    })
    .await
    .unwrap();
    let url = format!("{}/api/v2/deleted_tickets.json", strict.base_url());
    let r = http()
        .get(&url)
        .basic_auth("a@b.c/token", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .get(&url)
        .basic_auth("a@b.c/token", Some("right"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn purge_job_runs_queued_to_completed_and_tickets_vanish() {
    let sb = Sandbox::start_local(SandboxOptions {
        // an hour of Zendesk time is 6 s here: the job stays queued while
        // the request is answered and checked, however slow the host
        job_delay: Duration::from_secs(3600),
        job_ttl: Duration::from_secs(7200),
        ..fast_sandbox_options(20)
    })
    .await
    .unwrap();
    let ids: Vec<u64> = sb.deleted_ids().into_iter().take(3).collect();
    let joined = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let r = http()
        .delete(format!(
            "{}/api/v2/deleted_tickets/destroy_many.json?ids={joined}",
            sb.base_url()
        ))
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let job = &body["job_status"];
    assert_eq!(job["status"], "queued");
    assert!(job["results"].is_null());
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(id.trim_start_matches("V3-").len(), 32);
    assert_eq!(
        sb.deleted_ids().len(),
        20,
        "nothing vanishes before the job ends"
    );

    // the job's end (created + 6 s here) is passed on the sandbox's own
    // clock (tokio's), not waited for
    jump(Duration::from_secs(7)).await;
    let shown = get_json(&format!("{}/api/v2/job_statuses/{id}.json", sb.base_url())).await;
    assert_eq!(shown["job_status"]["status"], "completed");
    assert_eq!(shown["job_status"]["results"]["success"], true);
    let many = get_json(&format!(
        "{}/api/v2/job_statuses/show_many.json?ids={id},nope",
        sb.base_url()
    ))
    .await;
    assert_eq!(many["job_statuses"].as_array().unwrap().len(), 1);
    assert_eq!(sb.deleted_ids().len(), 17);
    assert_eq!(sb.purged_ids(), {
        let mut s = ids.clone();
        s.sort();
        s
    });

    // the status expires job_ttl after the job's end (12 s here): at
    // created + 18 s, passed at created + 20 s at the latest
    jump(Duration::from_secs(13)).await;
    assert_eq!(
        get(&format!("{}/api/v2/job_statuses/{id}", sb.base_url()))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn bulk_calls_refuse_more_than_100_ids_and_unknown_ids() {
    let sb = sandbox(5).await;
    let many: String = (1..=101)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let r = http()
        .delete(format!(
            "{}/api/v2/deleted_tickets/destroy_many?ids={many}",
            sb.base_url()
        ))
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = http()
        .put(format!(
            "{}/api/v2/deleted_tickets/1/restore",
            sb.base_url()
        ))
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "RecordNotFound");
    let r = http()
        .delete(format!("{}/api/v2/deleted_tickets/1.json", sb.base_url()))
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn restore_many_takes_tickets_out_of_the_deleted_view() {
    let sb = sandbox(5).await;
    let ids = sb.deleted_ids();
    let r = http()
        .put(format!(
            "{}/api/v2/deleted_tickets/restore_many.json?ids={},{}",
            sb.base_url(),
            ids[0],
            ids[1]
        ))
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(sb.deleted_ids(), ids[2..]);
    assert_eq!(sb.restored_ids(), ids[..2]);
}

#[tokio::test]
async fn list_quota_answers_429_with_retry_after_and_html() {
    // a Zendesk minute lasts 10 s here: the 11th listing in it is refused
    let sb = Sandbox::start_local(SandboxOptions {
        time_scale: 6.0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let url = format!("{}/api/v2/deleted_tickets.json?page[size]=1", sb.base_url());
    for i in 0..10 {
        let r = get(&url).await;
        assert_eq!(r.status(), 200, "request {i}");
        let remaining = r.headers()["zendesk-rate-limit-deleted-tickets-index"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            remaining.contains(&format!("remaining={}", 9 - i)),
            "{remaining}"
        );
        assert!(r.headers().contains_key("x-rate-limit-remaining"));
        assert!(r.headers().contains_key("ratelimit-reset"));
    }
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    let wait: f64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0.0 && wait <= 10.0, "{wait}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(sb.request_counts()["list"][&429], 1);
}

#[tokio::test]
async fn more_than_30_open_jobs_are_refused_with_429() {
    let sb = Sandbox::start_local(SandboxOptions {
        job_delay: Duration::from_secs(3600),
        ..fast_sandbox_options(40)
    })
    .await
    .unwrap();
    let ids = sb.deleted_ids();
    let mut statuses = Vec::new();
    for id in ids.iter().take(31) {
        let r = http()
            .delete(format!("{}/api/v2/deleted_tickets/{id}", sb.base_url()))
            .basic_auth("a@b.c/token", Some("x"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[30], 429);
}

#[tokio::test]
async fn injected_faults_break_answers_as_configured() {
    let sb = sandbox(10).await;
    let url = format!("{}/api/v2/deleted_tickets.json", sb.base_url());
    sb.set_faults(Faults {
        server_errors: 1.0,
        ..Faults::default()
    });
    assert!(get(&url).await.status().is_server_error());
    sb.set_faults(Faults {
        malformed: 1.0,
        ..Faults::default()
    });
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    sb.set_faults(Faults {
        drops: 1.0,
        ..Faults::default()
    });
    let broken = match http()
        .get(&url)
        .basic_auth("a@b.c/token", Some("x"))
        .send()
        .await
    {
        Err(_) => true,
        Ok(r) => r.text().await.is_err(),
    };
    assert!(broken, "a dropped connection breaks the answer");
    sb.set_faults(Faults {
        rate_limits: 1.0,
        ..Faults::default()
    });
    assert_eq!(get(&url).await.status(), 429);
    sb.set_faults(Faults {
        reject_auth_after: Some(0),
        ..Faults::default()
    });
    assert_eq!(get(&url).await.status(), 401);
}

#[test]
fn generated_data_is_deterministic_per_seed() {
    let now = chrono::Utc::now();
    let a = generate_tickets(500, 7, now);
    assert_eq!(a, generate_tickets(500, 7, now));
    assert_ne!(a, generate_tickets(500, 8, now));
    assert!(a.iter().any(|t| t.subject.is_none()));
    assert!(
        a.iter()
            .any(|t| t.actor_id == zd_retention::sandbox::AUTOMATION_ACTOR.0)
    );
    let states: std::collections::BTreeSet<_> =
        a.iter().map(|t| t.previous_state.as_str()).collect();
    assert_eq!(states.len(), 6);
    assert!(
        a.iter()
            .all(|t| now - t.deleted_at <= chrono::Duration::days(30))
    );
}
