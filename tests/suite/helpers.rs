//! Shared set-up: clients with compressed quotas pointed at a URL, sandboxes
//! on port 0.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;
use zd_retention::quota::RateQuota;
use zd_retention::sandbox::{Sandbox, SandboxOptions};
use zd_retention::zendesk::{Auth, ClientConfig, RateLimits, RetryPolicy, ZendeskClient};

/// A token that the tests look for in outputs where it must not be.
pub const TOKEN: &str = "tok-SECRET-4711-do-not-leak";

pub fn fast_limits() -> RateLimits {
    RateLimits {
        list: RateQuota::new(10, Duration::from_millis(100)).unwrap(),
        list_deep: RateQuota::new(5, Duration::from_millis(100)).unwrap(),
        account: RateQuota::new(200, Duration::from_millis(100)).unwrap(),
    }
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
    }
}

pub fn client_for(base: &str) -> ZendeskClient {
    ZendeskClient::new(ClientConfig {
        base_url: Url::parse(base).unwrap(),
        auth: Auth::ApiToken {
            email: "ops@acme.example".into(),
            token: SecretString::from(TOKEN),
        },
        limits: fast_limits(),
        retry: fast_retry(),
    })
    .unwrap()
}

/// Sandbox options with time compressed 600 times (a Zendesk minute is
/// 100 ms), matching `fast_limits`.
pub fn fast_sandbox_options(tickets: usize) -> SandboxOptions {
    SandboxOptions {
        tickets,
        time_scale: 600.0,
        ..SandboxOptions::default()
    }
}

pub async fn sandbox(tickets: usize) -> Sandbox {
    Sandbox::start_local(fast_sandbox_options(tickets))
        .await
        .unwrap()
}
