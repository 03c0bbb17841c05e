//! The client's wire behaviour against wiremock, with literal JSON from the
//! API notes.

use std::time::Duration;
use zd_retention::ids::TicketId;

use futures::StreamExt;
use secrecy::SecretString;
use url::Url;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};
use zd_retention::zendesk::{
    Auth, ClientConfig, IdBatch, JobResults, JobState, ListOptions, ZendeskClient, ZendeskError,
    check_base_url,
};

use crate::helpers::{TOKEN, client_for, fast_limits, fast_retry};

const QUEUED_JOB: &str = r#"{"job_status": {"id": "82de0b044094f0c67893ac9fe64f1a99", "url": "https://acme.zendesk.com/api/v2/job_statuses/82de0b044094f0c67893ac9fe64f1a99.json",
  "status": "queued", "total": null, "progress": null, "message": null, "results": null}}"#;

fn page(tickets: &str, has_more: bool, next: Option<&str>) -> String {
    let next = next.map_or("null".to_string(), |n| format!("{n:?}"));
    format!(
        r#"{{"deleted_tickets": [{tickets}], "meta": {{"has_more": {has_more}, "after_cursor": "xxx", "before_cursor": "yyy"}}, "links": {{"next": {next}, "prev": null}}}}"#
    )
}

#[tokio::test]
async fn sends_api_token_as_basic_email_slash_token() {
    let server = MockServer::start().await;
    // base64("ops@acme.example/token:tok-SECRET-4711-do-not-leak")
    let expected = "Basic b3BzQGFjbWUuZXhhbXBsZS90b2tlbjp0b2stU0VDUkVULTQ3MTEtZG8tbm90LWxlYWs=";
    Mock::given(method("GET"))
        .and(path(
            "/api/v2/job_statuses/82de0b044094f0c67893ac9fe64f1a99.json",
        ))
        .and(header("authorization", expected))
        .respond_with(ResponseTemplate::new(200).set_body_raw(QUEUED_JOB, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let job = client
        .job_status(&zd_retention::zendesk::JobId(
            "82de0b044094f0c67893ac9fe64f1a99".into(),
        ))
        .await
        .unwrap();
    assert_eq!(job.status, JobState::Queued);
    assert_eq!(job.results, JobResults::Pending);
}

#[tokio::test]
async fn sends_oauth_token_as_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer oauth-abc"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(r#"{"job_statuses": []}"#, "application/json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = ZendeskClient::new(ClientConfig {
        base_url: Url::parse(&server.uri()).unwrap(),
        auth: Auth::OAuth {
            token: SecretString::from("oauth-abc"),
        },
        limits: fast_limits(),
        retry: fast_retry(),
    })
    .unwrap();
    let jobs = client
        .job_statuses(&[zd_retention::zendesk::JobId("a".into())])
        .await
        .unwrap();
    assert!(jobs.is_empty());
}

#[tokio::test]
async fn follows_cursor_links_to_the_end_on_the_configured_host() {
    let server = MockServer::start().await;
    // Zendesk's next link names its own host; the client must re-base it.
    let next = "https://acme.zendesk.com/api/v2/deleted_tickets.json?page%5Bafter%5D=xxx&page%5Bsize%5D=100";
    Mock::given(method("GET"))
        .and(path("/api/v2/deleted_tickets.json"))
        .and(query_param("page[after]", "xxx"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            page(r#"{"id": 2, "subject": null, "actor": {"id": 3946, "name": "Taz Wombat"}, "deleted_at": "20140704T15:37:04Z", "previous_state": "closed"}"#, false, None),
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/deleted_tickets.json"))
        .and(query_param("page[size]", "100"))
        .and(query_param("sort_by", "deleted_at"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            page(r#"{"id": 581, "subject": "Wombat Party", "actor": {"id": 3946, "name": "Taz Wombat"}, "deleted_at": "2014-07-04T15:37:04Z", "previous_state": "open", "description": "x", "url": "u", "brand_new_field": [1]}"#, true, Some(next)),
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let options = ListOptions {
        sort: Some((
            zd_retention::zendesk::SortBy::DeletedAt,
            zd_retention::zendesk::SortOrder::Asc,
        )),
        ..ListOptions::default()
    };
    let pages: Vec<_> = client.list_deleted(options).collect().await;
    let pages: Vec<_> = pages.into_iter().map(Result::unwrap).collect();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].tickets[0].id.get(), 581);
    assert_eq!(pages[0].tickets[0].subject.as_deref(), Some("Wombat Party"));
    assert_eq!(pages[1].tickets[0].subject, None);
    // both date forms of the notes decode to the same instant
    assert_eq!(
        pages[0].tickets[0].deleted_at,
        pages[1].tickets[0].deleted_at
    );
    assert!(pages[0].tickets[0].deleted_at.is_some());
    assert!(!pages[1].has_more);
}

#[tokio::test]
async fn a_purge_answered_429_comes_back_with_its_wait_and_is_not_resent_by_the_client() {
    // The worker waits Retry-After, reads the newest deletions again and
    // re-sends (each attempt recorded); the client sends it once.
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v2/deleted_tickets/destroy_many.json"))
        .and(query_param("ids", "1,2,3"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_raw("<html><body>Too Many Requests</body></html>", "text/html"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let err = client
        .destroy_many(&IdBatch::new([1, 2, 3].map(TicketId::new).to_vec()).unwrap())
        .await
        .unwrap_err();
    match err {
        ZendeskError::RateLimited { wait, .. } => assert_eq!(wait, Duration::from_secs(1)),
        other => panic!("expected a 429, got {other:?}"),
    }
    let stats = client.stats();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.retries, 0);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_listing_answered_429_is_waited_out_and_sent_again_by_the_client() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/deleted_tickets.json"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_raw("<html><body>Too Many Requests</body></html>", "text/html"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/deleted_tickets.json"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"deleted_tickets": [], "meta": {"has_more": false}, "links": {"next": null}}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    use futures::StreamExt;
    let pages: Vec<_> = client.list_deleted(Default::default()).collect().await;
    assert_eq!(pages.len(), 1);
    assert!(pages[0].is_ok());
    let stats = client.stats();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.retries, 1);
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].url.query(), received[1].url.query());
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_raw("<html>Service Unavailable</html>", "text/html"),
        )
        .expect(4) // the first attempt and max_retries = 3
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let err = client
        .job_status(&zd_retention::zendesk::JobId("abc".into()))
        .await
        .unwrap_err();
    match &err {
        ZendeskError::Transient {
            attempts, reason, ..
        } => {
            assert_eq!(*attempts, 4);
            assert!(reason.contains("503"), "{reason}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("GET job_statuses/abc"),
        "the message names the call: {err}"
    );
    assert_eq!(client.stats().retries, 3);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_shows_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_raw(
            r#"{"error":"Couldn't authenticate you"}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let err = client
        .list_deleted(ListOptions::default())
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ZendeskError::Unauthorized { .. }), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    }
    assert!(err.to_string().contains("Couldn't authenticate you"));
}

#[tokio::test]
async fn decodes_the_job_shapes_of_the_notes() {
    let server = MockServer::start().await;
    let body = r#"{"job_statuses": [
      {"id": "V3-dd9321f29967688b27bc9499ebb4ae8d", "url": "...", "status": "completed",
       "total": null, "progress": null, "message": "Completed at 2018-03-08 06:07:49 +0000",
       "results": {"success": true}},
      {"id": "82de0b044094f0c67893ac9fe64f1a99", "status": "completed", "total": 2, "progress": 2,
       "message": "Completed at 2018-03-08 10:07:04 +0000",
       "results": [{"action": "update", "id": 244, "status": "Updated", "success": true},
                   {"id": 245, "success": false, "error": "TicketNotFound", "details": "gone"}]},
      {"id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "status": "paused", "results": null},
      {"id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "status": "killed", "message": "Killed"}
    ]}"#;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_statuses/show_many.json"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let jobs = client
        .job_statuses(&[zd_retention::zendesk::JobId("x".into())])
        .await
        .unwrap();
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0].id.0, "V3-dd9321f29967688b27bc9499ebb4ae8d");
    assert_eq!(jobs[0].results, JobResults::Success(true));
    assert!(jobs[0].status.is_terminal());
    assert!(matches!(&jobs[1].results, JobResults::Items(items) if items.len() == 2));
    assert_eq!(jobs[1].results.succeeded(), Some(false));
    assert_eq!(jobs[2].status, JobState::Other("paused".into()));
    assert!(!jobs[2].status.is_terminal());
    assert_eq!(jobs[3].status, JobState::Killed);
}

#[tokio::test]
async fn error_bodies_are_kept_json_or_text() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/deleted_tickets/7/restore.json"))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            r#"{"error": "RecordNotFound", "description": "Not found"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/deleted_tickets/restore_many.json"))
        .respond_with(ResponseTemplate::new(422).set_body_raw(
            r#"{"error": "RecordInvalid", "details": {"ids": [{"description": "too many"}]}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>not json</html>", "text/html"))
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let err = client.restore(TicketId::new(7)).await.unwrap_err();
    assert!(matches!(err, ZendeskError::NotFound { .. }));
    assert!(
        err.to_string().contains("RecordNotFound - Not found"),
        "{err}"
    );
    let err = client
        .restore_many(&IdBatch::new(vec![TicketId::new(1)]).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ZendeskError::InvalidRequest { status: 422, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("too many"), "{err}");
    let err = client.destroy(TicketId::new(9)).await.unwrap_err();
    match err {
        ZendeskError::Decode { shape, call, .. } => {
            assert!(shape.contains("HTML"), "{shape}");
            assert!(
                !shape.contains("not json"),
                "the body's text is never quoted: {shape}"
            );
            assert!(call.contains("DELETE deleted_tickets/9"), "{call}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn spent_budget_headers_hold_the_next_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ratelimit-remaining", "0")
                .insert_header("ratelimit-reset", "1")
                .set_body_raw(r#"{"job_statuses": []}"#, "application/json"),
        )
        .expect(2)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let id = [zd_retention::zendesk::JobId("x".into())];
    client.job_statuses(&id).await.unwrap();
    // the answer's spent budget holds the next request (how long it waits is
    // the pacer's unit test, on tokio's paused clock)
    let held = client
        .holding()
        .expect("the spent budget holds requests off");
    assert!(
        held > Duration::from_millis(500) && held <= Duration::from_secs(1),
        "{held:?}"
    );
    client.job_statuses(&id).await.unwrap();
}

#[test]
fn plain_http_is_refused_beyond_loopback() {
    assert!(check_base_url("http://acme.zendesk.com").is_err());
    assert!(check_base_url("http://10.0.0.1:8089").is_err());
    assert!(check_base_url("http://127.0.0.1:8089").is_ok());
    assert!(check_base_url("http://localhost:8089").is_ok());
    assert!(check_base_url("http://[::1]:8089").is_ok());
    assert!(check_base_url("https://acme.zendesk.com").is_ok());
    assert!(check_base_url("ftp://acme.zendesk.com").is_err());
}
