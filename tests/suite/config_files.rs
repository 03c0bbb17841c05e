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

#[test]
fn deployed_configs_parse() {
    // parsed as text: its folder is made on the host, by the unit's
    // StateDirectory (load refuses a database whose folder is missing)
    let text = std::fs::read_to_string("deploy/systemd/config.toml").unwrap();
    let systemd = Config::parse(&text, "deploy/systemd/config.toml").unwrap();
    assert_eq!(
        systemd.audit.database,
        std::path::Path::new("/var/lib/zd-retention/zd-retention.db")
    );
    assert!(systemd.safety.dry_run);
    // the config inside the Kubernetes ConfigMaps (SQLite, PostgreSQL)
    let embedded = |path: &str| -> String {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .skip_while(|l| !l.contains("config.toml: |"))
            .skip(1)
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let k8s = Config::parse(
        &embedded("deploy/kubernetes/configmap.yaml"),
        "configmap.yaml",
    )
    .unwrap();
    assert_eq!(k8s.listen.unwrap().port(), 9464);
    assert!(k8s.safety.dry_run);
    assert!(k8s.audit.postgres.is_none());
    let pg = Config::parse(
        &embedded("deploy/kubernetes/postgres/configmap.yaml"),
        "postgres/configmap.yaml",
    )
    .unwrap();
    let audit = pg.audit.postgres.expect("a PostgreSQL audit");
    assert!(audit.url.contains("sslmode=verify-full"));
    assert!(audit.password_file.is_some());
    assert!(pg.safety.dry_run);
}
