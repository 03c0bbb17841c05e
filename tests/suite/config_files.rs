//! The shipped config files parse, and the example is a dry run.

use zd_retention::config::Config;

#[test]
fn example_config_parses_and_is_a_dry_run() {
    let config = Config::load(std::path::Path::new("config/example.toml")).unwrap();
    assert!(config.safety.dry_run, "a new user's example must not purge");
    assert_eq!(config.policy.rules.len(), 3);
    assert_eq!(
        config.zendesk.base_url.as_str(),
        "https://acme.zendesk.com/"
    );
    assert_eq!(config.schedule.cron, "0 */15 * * * *");
    assert!(!config.audit.record_subjects);
}

#[test]
fn sandbox_config_parses() {
    let config = Config::load(std::path::Path::new("config/sandbox.toml")).unwrap();
    assert_eq!(config.zendesk.base_url.as_str(), "http://127.0.0.1:8089/");
    assert!(config.safety.dry_run);
}
