//! The configuration: TOML read into raw serde structs (unknown keys
//! refused), then validated once into typed values.
//!
//! This is the only module that reads files or the environment: the config
//! file, the token (from a variable or a file) and `ZD_RETENTION_CONFIG`.
//! Every error names the key, the line where there is one, what is wrong and
//! how to fix it. The token is held as a `SecretString` from the moment it is
//! read.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use regex::RegexBuilder;
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;
use url::Url;

use crate::audit::{ChainSigner, ChainVerifier};
use crate::ids::TicketId;
use crate::quota::RateQuota;
use crate::rules::{Policy, RetentionRule, RuleAction};
use crate::zendesk::{Auth, ClientConfig, RateLimits, RetryPolicy, check_base_url, subdomain_url};

/// The environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "ZD_RETENTION_CONFIG";

/// Zendesk's own ceiling on jobs queued or running per account.
const ZENDESK_JOB_LIMIT: usize = 30;

// ---------------------------------------------------------------- raw stage

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    zendesk: Spanned<RawZendesk>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZendesk {
    subdomain: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    oauth_token_env: Option<Spanned<String>>,
    oauth_token_file: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_retries: Option<Spanned<i64>>,
    job_poll_interval: Option<Spanned<String>>,
    job_timeout: Option<Spanned<String>>,
    clock_skew: Option<Spanned<String>>,
    #[serde(default)]
    rate_limits: RawRateLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    list: Option<Spanned<String>>,
    list_deep: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    max_jobs_in_flight: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    reconcile: Option<Spanned<String>>,
    check_share: Option<Spanned<f64>>,
    latency_bound: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    database: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    record_subjects: Option<bool>,
    keep_details: Option<Spanned<String>>,
    signing_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    dry_run: Option<bool>,
    min_age: Option<Spanned<String>>,
    max_purges_per_run: Option<Spanned<i64>>,
    protect_ids: Option<Spanned<Vec<i64>>>,
    purge_while_scanning: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    action: Spanned<String>,
    older_than: Option<Spanned<String>>,
    younger_than: Option<Spanned<String>>,
    previous_state: Option<Spanned<Vec<String>>>,
    actor_ids: Option<Spanned<Vec<i64>>>,
    actor_names: Option<Spanned<Vec<String>>>,
    subject_matches: Option<Spanned<String>>,
    match_all: Option<bool>,
}

// -------------------------------------------------------------- typed stage

/// Where the API credential comes from; read only when a command needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    ApiTokenEnv { email: String, var: String },
    ApiTokenFile { email: String, path: PathBuf },
    OAuthEnv { var: String },
    OAuthFile { path: PathBuf },
}

/// `[zendesk]`, validated.
#[derive(Debug, Clone)]
pub struct ZendeskSettings {
    pub base_url: Url,
    pub token: TokenSource,
    /// The line of the credential's key, for the errors of reading it.
    pub token_line: Option<usize>,
    pub limits: RateLimits,
    pub max_jobs_in_flight: usize,
    pub retry: RetryPolicy,
    /// How often open jobs are polled with `show_many`.
    pub job_poll_interval: Duration,
    /// A job not finished after this long counts as unknown.
    pub job_timeout: Duration,
    /// How far Zendesk's clock (its `deleted_at`) and this host's may
    /// disagree: each newest-first read looks back this much further.
    pub clock_skew: Duration,
}

/// `[schedule]`, validated.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Six fields, seconds first (a five-field cron gets `0` prepended).
    pub cron: String,
    pub timezone: chrono_tz::Tz,
    /// How long a stopping daemon follows open jobs before it gives up.
    pub shutdown_grace: Duration,
    /// How often a run walks the whole view (a reconcile) instead of only
    /// the newest deletions; `0s` makes every run a reconcile.
    pub reconcile: Duration,
    /// The share of the listing quota (over one schedule interval) that a
    /// whole-view check may take in a run; the check spans as many runs as
    /// it needs, and refreshes go on purging meanwhile.
    pub check_share: f64,
    /// What the purge-latency alert holds the 95th percentile to (`None`:
    /// twice the schedule's interval: one interval plus a refresh).
    pub latency_bound: Option<Duration>,
}

impl Schedule {
    /// The time between the schedule's next two runs after `now` (`None`
    /// when the cron has no two more).
    pub fn interval(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        let cron = cron_parser().parse(&self.cron).ok()?;
        let now = now.with_timezone(&self.timezone);
        let first = cron.find_next_occurrence(&now, false).ok()?;
        let second = cron.find_next_occurrence(&first, false).ok()?;
        (second - first).to_std().ok()
    }
}

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The SQLite file (empty when the audit is in PostgreSQL).
    pub database: PathBuf,
    /// The PostgreSQL database that keeps the audit instead, if any.
    pub postgres: Option<PostgresAudit>,
    pub record_subjects: bool,
    /// Details of tickets settled longer ago than this are pruned (`None`:
    /// kept for ever); each purge's evidence is always kept.
    pub keep_details: Option<Duration>,
    /// An Ed25519 private key (PKCS#8 PEM) that signs every commit to the
    /// audit log; read when the store opens, never kept in the config.
    pub signing_key_file: Option<PathBuf>,
    /// The line of `signing_key_file`, for the errors of reading the key.
    pub signing_key_line: Option<usize>,
}

/// `[audit] database = "postgres://…"`: the URL as written (never with a
/// password) and where its password is read.
#[derive(Debug, Clone)]
pub struct PostgresAudit {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

impl PostgresAudit {
    /// The URL to connect with, its password read from the file or the
    /// environment now (never kept in the config).
    pub fn connect_url(&self) -> anyhow::Result<SecretString> {
        let password = match (&self.password_file, &self.password_env) {
            (Some(path), _) => {
                warn_if_world_readable(path);
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("audit.password_file: cannot read {}: {e}", path.display())
                })?;
                let text = text.trim_end_matches(['\n', '\r']).to_string();
                if text.is_empty() {
                    anyhow::bail!(
                        "audit.password_file: {} is empty: write the database password into it",
                        path.display()
                    );
                }
                Some(text)
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => anyhow::bail!(
                    "audit.password_env: the environment variable {var} is not set or empty: export {var}=<the database password>"
                ),
            },
            (None, None) => None,
        };
        let mut url = url::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("audit.database: not a URL: {e}"))?;
        if let Some(password) = password {
            url.set_password(Some(&password)).map_err(|()| {
                anyhow::anyhow!("audit.database: this URL cannot carry a password")
            })?;
        }
        Ok(SecretString::from(url.to_string()))
    }
}

/// `[safety]`, validated.
#[derive(Debug, Clone)]
pub struct Safety {
    pub dry_run: bool,
    pub max_purges_per_run: u64,
    /// Send batches while the scan goes on (faster); the purge limit then
    /// stops sending at the limit instead of purging nothing.
    pub purge_while_scanning: bool,
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// SHA-256 of the file's text, recorded with every run.
    pub hash: String,
    pub zendesk: ZendeskSettings,
    pub schedule: Schedule,
    pub audit: AuditSettings,
    pub safety: Safety,
    /// The rules with the safety floor (`min_age`, `protect_ids`).
    pub policy: Policy,
    /// `[server] listen`: health and metrics while `run` is up.
    pub listen: Option<std::net::SocketAddr>,
}

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Everything wrong with a config file, each with its key and fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<ConfigProblem>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{} in the config",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            match p.line {
                Some(line) => write!(f, "\n  line {line}: {}: {}", p.key, p.message)?,
                None => write!(f, "\n  {}: {}", p.key, p.message)?,
            }
        }
        Ok(())
    }
}

/// Collects problems while validating, with line numbers from spans.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<ConfigProblem>,
    /// Whether the paths a command will use are looked at (a loaded
    /// config), or the text is checked alone (`Config::parse`).
    look_at_files: bool,
}

impl Checker<'_> {
    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at<T>(&mut self, key: impl Into<String>, value: &Spanned<T>, message: impl Into<String>) {
        let line = Some(self.line_of(value.span()));
        self.problems.push(ConfigProblem {
            key: key.into(),
            line,
            message: message.into(),
        });
    }

    /// A problem of a key that is missing or was given elsewhere: `line`
    /// is its table's (or the key's that stands in for it).
    fn at_line(&mut self, key: impl Into<String>, line: usize, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            line: Some(line),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: &Option<Spanned<String>>) -> Option<Duration> {
        let v = value.as_ref()?;
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d > crate::human::LONGEST => {
                // kept for the key's other checks; the config is refused
                self.at(
                    key,
                    v,
                    format!(
                        "{:?} is more than 100 years: no setting needs that long (and a clock it is added to overflows); write a shorter duration",
                        v.get_ref()
                    ),
                );
                Some(d)
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.at(
                    key,
                    v,
                    format!(
                        "{:?} is not a duration ({e}); write it like \"7d\", \"12h\" or \"90m\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn quota(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: RateQuota,
    ) -> RateQuota {
        let Some(v) = value else { return default };
        match v.get_ref().parse::<RateQuota>() {
            Ok(q) => q,
            Err(e) => {
                self.at(key, v, e);
                default
            }
        }
    }

    fn string(&mut self, key: &str, value: &Option<Spanned<String>>) -> Option<String> {
        let v = value.as_ref()?;
        if v.get_ref().trim().is_empty() {
            self.at(key, v, "is empty; give a value or remove the key");
            return None;
        }
        Some(v.get_ref().trim().to_string())
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![ConfigProblem {
                key: "(file)".into(),
                line: None,
                message: format!(
                    "cannot read it: {e}; give an existing file with --config or {CONFIG_ENV}"
                ),
            }],
        })?;
        // the config holds no secret (tokens come from a variable or a
        // file): its mode is not warned about
        // A relative database path is taken relative to the working
        // directory, as an operator typing commands expects: its folder
        // must exist there.
        let mut config = Self::validate(&text, &file, true)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates config text; `file` names it in errors. Looks at no file:
    /// [`Self::load`] also checks that the audit database's folder exists.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::validate(text, file, false)
    }

    fn validate(text: &str, file: &str, look_at_files: bool) -> Result<Config, ConfigError> {
        let raw = parse_raw(text).map_err(|(e, path)| ConfigError {
            file: file.to_string(),
            problems: vec![toml_problem(text, &e, path)],
        })?;
        let mut c = Checker {
            text,
            problems: Vec::new(),
            look_at_files,
        };
        let zendesk = c.zendesk(&raw.zendesk);
        let schedule = c.schedule(&raw.schedule);
        let audit = c.audit(&raw.audit);
        let (safety, min_age, protect_ids) = c.safety(&raw.safety);
        let listen = c.server(&raw.server);
        let rules = c.rules(&raw.rules, min_age);
        if !c.problems.is_empty() {
            return Err(ConfigError {
                file: file.to_string(),
                problems: c.problems,
            });
        }
        let Some(zendesk) = zendesk else {
            unreachable!("a missing URL or token always records a problem");
        };
        Ok(Config {
            source: None,
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            zendesk,
            schedule,
            audit,
            safety,
            policy: Policy {
                rules,
                min_age,
                protect_ids,
            },
            listen,
        })
    }

    /// Finds the config file: `--config`, else `ZD_RETENTION_CONFIG`.
    pub fn locate(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = flag {
            return Ok(p.to_path_buf());
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(ConfigError {
                file: "(no config file)".into(),
                problems: vec![ConfigProblem {
                    key: "--config".into(),
                    line: None,
                    message: format!(
                        "no config file given: pass --config PATH or set {CONFIG_ENV}; config/example.toml is a commented starting point"
                    ),
                }],
            }),
        }
    }

    /// Where systemd puts the token file for the service (`LoadCredential`),
    /// when this process is not that service and the file is not here: an
    /// administrator's `check-config` outside the service cannot read it.
    pub fn token_from_systemd_elsewhere(&self) -> Option<&Path> {
        match &self.zendesk.token {
            TokenSource::ApiTokenFile { path, .. } | TokenSource::OAuthFile { path } => {
                systemd_credential_elsewhere(path)
            }
            _ => None,
        }
    }

    /// As [`Self::token_from_systemd_elsewhere`], for the signing key.
    pub fn signing_key_from_systemd_elsewhere(&self) -> Option<&Path> {
        self.audit
            .signing_key_file
            .as_deref()
            .and_then(systemd_credential_elsewhere)
    }

    /// Reads the credential from its variable or file.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        read_auth(&self.zendesk.token).map_err(|(key, message)| ConfigError {
            file: self
                .source
                .as_ref()
                .map_or("(config)".into(), |p| p.display().to_string()),
            problems: vec![ConfigProblem {
                key: key.into(),
                line: self.zendesk.token_line,
                message,
            }],
        })
    }

    /// The key that signs chain heads, read from `[audit] signing_key_file`
    /// now (`None`: records are unsigned). The message never quotes the file.
    pub fn chain_signer(&self) -> Result<Option<ChainSigner>, ConfigError> {
        let Some(path) = &self.audit.signing_key_file else {
            return Ok(None);
        };
        warn_if_world_readable(path);
        let problem = |message: String| ConfigError {
            file: self
                .source
                .as_ref()
                .map_or("(config)".into(), |p| p.display().to_string()),
            problems: vec![ConfigProblem {
                key: "audit.signing_key_file".into(),
                line: self.audit.signing_key_line,
                message,
            }],
        };
        let bytes = std::fs::read(path).map_err(|e| {
            problem(format!(
                "cannot read the signing key {}: {e}",
                path.display()
            ))
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            problem(format!(
                "{} is not a PEM text file (a DER key? convert it with `openssl pkey -in KEY -outform PEM`), or make one with `zd-retention audit keygen`",
                path.display()
            ))
        })?;
        ChainSigner::from_pem(&text)
            .map(Some)
            .map_err(|e| problem(format!("{}: {e}", path.display())))
    }

    /// The config's settings as a config version stores them (rules in
    /// words, the safety floor, schedule, audit): never a credential, nor
    /// where one is kept. A subject pattern (it may name people) is stored
    /// only with `record_subjects`; otherwise by its fingerprint, as the
    /// ledger keeps it.
    pub fn version_settings(&self) -> String {
        let rules: Vec<serde_json::Value> = self
            .policy
            .rules
            .iter()
            .map(|r| {
                let mut words = r.describe();
                if let (false, Some(re)) = (self.audit.record_subjects, &r.subject_matches) {
                    words = words.replace(
                        &format!("subject matches /{}/", re.as_str()),
                        &format!(
                            "subject matches a pattern (fingerprint {}; the pattern is kept only with record_subjects)",
                            crate::rules::subject_fingerprint(re)
                        ),
                    );
                }
                serde_json::json!({
                    "name": r.name,
                    "action": r.action.as_str(),
                    "in_words": format!("{} tickets {}", r.action.as_str(), words),
                })
            })
            .collect();
        let version = serde_json::json!({
            "account": self.zendesk.base_url.as_str(),
            "rules": rules,
            "safety": {
                "dry_run": self.safety.dry_run,
                "min_age": crate::human::duration(self.policy.min_age),
                "protect_ids": self.policy.protect_ids,
                "max_purges_per_run": self.safety.max_purges_per_run,
                "purge_while_scanning": self.safety.purge_while_scanning,
            },
            "schedule": {
                "cron": self.schedule.cron,
                "timezone": self.schedule.timezone.name(),
                "reconcile": crate::human::duration(self.schedule.reconcile),
                "check_share": self.schedule.check_share,
            },
            "audit": {
                "record_subjects": self.audit.record_subjects,
                "keep_details": self.audit.keep_details.map(crate::human::duration),
                "signed": self.audit.signing_key_file.is_some(),
            },
        });
        serde_json::to_string_pretty(&version).unwrap_or_default()
    }

    /// Everything the client needs, the credential read now.
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        Ok(ClientConfig {
            base_url: self.zendesk.base_url.clone(),
            auth: self.auth()?,
            limits: self.zendesk.limits,
            retry: self.zendesk.retry,
        })
    }
}

/// A token as read, trimmed; refused when it holds a control character (a
/// newline inside it, a pasted escape): Zendesk would refuse it on every
/// request, and retries would only hide why. The message never shows it.
fn checked_token(
    key: &'static str,
    text: &str,
    source: &str,
) -> Result<SecretString, (&'static str, String)> {
    let token = text.trim();
    // Zendesk's tokens are printable ASCII: anything else (a line break, an
    // escape, an invisible or direction-changing character) was pasted in
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err((
            key,
            format!(
                "the token in {source} holds a control character, a space or a non-ASCII character (a line break, an invisible character): write the token alone on one line"
            ),
        ));
    }
    Ok(SecretString::from(token.to_string()))
}

fn read_auth(source: &TokenSource) -> Result<Auth, (&'static str, String)> {
    let from_env = |key: &'static str, var: &str| -> Result<SecretString, (&'static str, String)> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => {
                checked_token(key, &v, &format!("the environment variable {var}"))
            }
            Ok(_) => Err((
                key,
                format!("the environment variable {var} is empty: set it to the token"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err((
                key,
                format!(
                    "the environment variable {var} holds bytes that are not text: set it to the token alone"
                ),
            )),
            Err(std::env::VarError::NotPresent) => Err((
                key,
                format!(
                    "the environment variable {var} is not set: export {var}=<token> (or use a token file)"
                ),
            )),
        }
    };
    let from_file =
        |key: &'static str, path: &Path| -> Result<SecretString, (&'static str, String)> {
            warn_if_world_readable(path);
            match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => {
                    checked_token(key, &v, &format!("the token file {}", path.display()))
                }
                Ok(_) => Err((
                    key,
                    format!(
                        "the token file {} is empty: write the token into it",
                        path.display()
                    ),
                )),
                Err(e) => Err((
                    key,
                    format!("cannot read the token file {}: {e}", path.display()),
                )),
            }
        };
    Ok(match source {
        TokenSource::ApiTokenEnv { email, var } => Auth::ApiToken {
            email: email.clone(),
            token: from_env("zendesk.token_env", var)?,
        },
        TokenSource::ApiTokenFile { email, path } => Auth::ApiToken {
            email: email.clone(),
            token: from_file("zendesk.token_file", path)?,
        },
        TokenSource::OAuthEnv { var } => Auth::OAuth {
            token: from_env("zendesk.oauth_token_env", var)?,
        },
        TokenSource::OAuthFile { path } => Auth::OAuth {
            token: from_file("zendesk.oauth_token_file", path)?,
        },
    })
}

/// What is wrong with an audit database path, from the config or
/// `--database`: a URL other than PostgreSQL's in the config (a URL would
/// be taken as a relative file name; `--database` takes a path only), or, when `look` is set, a folder that does not exist (the
/// store never creates folders). The message never repeats the value: a
/// URL may carry a password.
pub fn database_path_problem(path: &Path, look: bool) -> Option<String> {
    let text = path.to_string_lossy();
    if let Some(scheme) = url_scheme(&text) {
        return Some(format!(
            "is a URL ({scheme}...): give an SQLite file path, such as \"/var/lib/zd-retention/zd-retention.db\" (a PostgreSQL audit is named in the config's audit.database as postgres://USER@HOST/DATABASE)"
        ));
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    (look && !folder.is_dir()).then(|| {
        format!(
            "its folder {} does not exist: create it first (zd-retention never creates folders), or give a path in an existing folder",
            folder.display()
        )
    })
}

/// The scheme a URL-like text begins with (`postgres://`, `sqlite:`), if
/// any: any `scheme://`, and the database schemes with one colon. A
/// Windows drive (`C:\`) is no scheme.
fn url_scheme(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once(':')?;
    let well_formed = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let database_scheme = matches!(
        scheme.to_ascii_lowercase().as_str(),
        "sqlite" | "sqlite3" | "file" | "postgres" | "postgresql" | "mysql" | "mariadb" | "mssql"
    );
    match (well_formed, rest.starts_with("//")) {
        (true, true) => Some(format!("{scheme}://")),
        (true, false) if database_scheme => Some(format!("{scheme}:")),
        _ => None,
    }
}

/// Whether an audit database text names a PostgreSQL database.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Reads a public key for `audit verify --public-key`.
pub fn read_public_key(path: &Path) -> anyhow::Result<ChainVerifier> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    ChainVerifier::from_pem(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Warns (without refusing: Kubernetes mounts secrets 0644) when others can
/// read a file that holds or leads to a secret.
fn warn_if_world_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o004 != 0
        {
            tracing::warn!(file = %path.display(), "the file is readable by every user of this machine; consider chmod 600");
        }
    }
}

/// Turns a five-field cron into six (seconds first) and checks it with the
/// same parser the scheduler uses.
pub fn normalise_cron(text: &str) -> Result<String, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let six = match fields.len() {
        5 => format!("0 {}", fields.join(" ")),
        6 => fields.join(" "),
        n => {
            return Err(format!(
                "{text:?} has {n} fields: write 6 (sec min hour day month weekday), e.g. \"0 */15 * * * *\", or the usual 5"
            ));
        }
    };
    cron_parser()
        .parse(&six)
        .map_err(|e| format!("{text:?} is not a valid cron expression ({e}); e.g. \"0 */15 * * * *\" runs every 15 minutes"))?;
    Ok(six)
}

/// The cron parser with the scheduler's settings.
pub fn cron_parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
}

/// The TOML read into the raw shape, or the error with the key path it
/// concerns (`safety.dry_run`), when it concerns one.
fn parse_raw(text: &str) -> Result<RawConfig, (toml::de::Error, Option<String>)> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| (e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // `Spanned` values add serde's private field to the path
        let path = e
            .path()
            .to_string()
            .split('.')
            .filter(|segment| !segment.starts_with("$__serde"))
            .collect::<Vec<_>>()
            .join(".");
        let path = (!path.is_empty() && path != ".").then_some(path);
        (e.into_inner(), path)
    })
}

fn toml_problem(text: &str, e: &toml::de::Error, path: Option<String>) -> ConfigProblem {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim().to_string();
    // serde's unknown-field message names the key and the accepted ones
    let fix = if message.contains("unknown field") {
        "; remove it or correct its spelling (see config/example.toml)"
    } else if message.contains("missing field") {
        "; add it (see config/example.toml)"
    } else if message.contains("invalid type") {
        "; check the value's type (quotes for strings and durations, none for numbers)"
    } else {
        ""
    };
    // the key path when serde knows it (a wrong type names
    // `safety.dry_run`), else the text at the error
    let key = path.unwrap_or_else(|| {
        e.span()
            .and_then(|s| text.get(s.clone()))
            .map(|s| s.trim().chars().take(40).collect::<String>())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "(syntax)".into())
    });
    ConfigProblem {
        key,
        line,
        message: format!("{message}{fix}"),
    }
}

impl Checker<'_> {
    /// `[zendesk]`; `None` when the URL or the credential is missing (a
    /// problem is recorded).
    /// The credential's source: exactly one of the four keys, with the
    /// email an API token needs.
    fn token(&mut self, z: &RawZendesk, table_line: usize) -> Option<(TokenSource, usize)> {
        let email = self.string("zendesk.email", &z.email);
        let sources = [
            ("token_env", &z.token_env),
            ("token_file", &z.token_file),
            ("oauth_token_env", &z.oauth_token_env),
            ("oauth_token_file", &z.oauth_token_file),
        ];
        let given: Vec<(&str, &Spanned<String>)> = sources
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
            .collect();
        match given.as_slice() {
            [] => {
                self.at_line("zendesk.token_env", table_line, "no credential: set token_env = \"ZENDESK_API_TOKEN\" (or token_file, oauth_token_env, oauth_token_file)");
                None
            }
            [(one, spanned)] => {
                let key = format!("zendesk.{one}");
                let line = self.line_of(spanned.span());
                let value = spanned.get_ref().trim().to_string();
                if value.is_empty() {
                    self.at(
                        &key,
                        spanned,
                        "is empty: name an environment variable or a file",
                    );
                    return None;
                }
                let source = match (*one, email) {
                    ("token_env", Some(email)) => TokenSource::ApiTokenEnv { email, var: value },
                    ("token_file", Some(email)) => TokenSource::ApiTokenFile {
                        email,
                        path: value.into(),
                    },
                    ("token_env" | "token_file", None) => {
                        self.at_line("zendesk.email", table_line, "missing: an API token is sent as {email}/token, so set email = \"agent@yourcompany.example\"");
                        return None;
                    }
                    ("oauth_token_env", _) => TokenSource::OAuthEnv { var: value },
                    _ => TokenSource::OAuthFile { path: value.into() },
                };
                Some((source, line))
            }
            [_, (_, second), ..] => {
                let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
                self.at(
                    "zendesk",
                    second,
                    format!(
                        "{} are all set; keep exactly one credential source",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// `[zendesk.rate_limits]`: the quotas and the jobs open at once.
    fn rate_limits(&mut self, r: &RawRateLimits) -> (RateLimits, usize) {
        let defaults = RateLimits::default();
        let limits = RateLimits {
            list: self.quota("zendesk.rate_limits.list", &r.list, defaults.list),
            list_deep: self.quota(
                "zendesk.rate_limits.list_deep",
                &r.list_deep,
                defaults.list_deep,
            ),
            account: self.quota("zendesk.rate_limits.account", &r.account, defaults.account),
        };
        let max_jobs_in_flight = match &r.max_jobs_in_flight {
            None => 10,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..ZENDESK_JOB_LIMIT).contains(&n) => n,
                _ => {
                    self.at("zendesk.rate_limits.max_jobs_in_flight", v, format!("{} is out of range: use 1 to {} (Zendesk allows about {ZENDESK_JOB_LIMIT} jobs per account, shared with other integrations)", v.get_ref(), ZENDESK_JOB_LIMIT - 1));
                    10
                }
            },
        };
        (limits, max_jobs_in_flight)
    }

    fn zendesk(&mut self, table: &Spanned<RawZendesk>) -> Option<ZendeskSettings> {
        let z = table.get_ref();
        let table_line = self.line_of(table.span());
        let base_url = match (&z.subdomain, &z.base_url) {
            (Some(_), Some(b)) => {
                self.at(
                    "zendesk.base_url",
                    b,
                    "give either zendesk.subdomain or zendesk.base_url, not both",
                );
                None
            }
            (Some(s), None) => subdomain_url(s.get_ref().trim())
                .map_err(|e| self.at("zendesk.subdomain", s, e))
                .ok(),
            (None, Some(b)) => check_base_url(b.get_ref().trim())
                .map_err(|e| self.at("zendesk.base_url", b, e))
                .ok(),
            (None, None) => {
                self.at_line("zendesk.subdomain", table_line, "missing: set subdomain = \"yourcompany\" (for yourcompany.zendesk.com) or base_url = \"https://...\"");
                None
            }
        };
        let token = self.token(z, table_line);
        let (limits, max_jobs_in_flight) = self.rate_limits(&z.rate_limits);
        let mut retry = RetryPolicy::default();
        if let Some(t) = self.duration("zendesk.request_timeout", &z.request_timeout) {
            if let (true, Some(v)) = (t.is_zero(), &z.request_timeout) {
                self.at(
                    "zendesk.request_timeout",
                    v,
                    "must be above zero, for example \"30s\"",
                );
            } else {
                retry.request_timeout = t;
            }
        }
        if let Some(v) = &z.max_retries {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if n <= 20 => retry.max_retries = n,
                _ => self.at(
                    "zendesk.max_retries",
                    v,
                    format!("{} is out of range: use 0 to 20", v.get_ref()),
                ),
            }
        }

        let job_poll_interval = self
            .duration("zendesk.job_poll_interval", &z.job_poll_interval)
            .unwrap_or(Duration::from_secs(2));
        let job_timeout = self
            .duration("zendesk.job_timeout", &z.job_timeout)
            .unwrap_or(Duration::from_secs(15 * 60));
        let clock_skew = self
            .duration("zendesk.clock_skew", &z.clock_skew)
            .unwrap_or(Duration::from_secs(120));
        if let (Some(v), true) = (&z.clock_skew, clock_skew > Duration::from_secs(3600)) {
            self.at(
                "zendesk.clock_skew",
                v,
                "must be at most 1h: every newest-first read looks back this far".to_string(),
            );
        }
        // a zero only comes from the file (the defaults are above zero)
        for (key, value, given) in [
            (
                "zendesk.job_poll_interval",
                job_poll_interval,
                &z.job_poll_interval,
            ),
            ("zendesk.job_timeout", job_timeout, &z.job_timeout),
            ("zendesk.clock_skew", clock_skew, &z.clock_skew),
        ] {
            if let (true, Some(v)) = (value.is_zero(), given) {
                self.at(key, v, "must be above zero, for example \"2s\"");
            }
        }

        let (Some(base_url), Some((token, token_line))) = (base_url, token) else {
            return None;
        };
        Some(ZendeskSettings {
            base_url,
            token,
            token_line: Some(token_line),
            limits,
            max_jobs_in_flight,
            retry,
            job_poll_interval,
            job_timeout,
            clock_skew,
        })
    }

    /// `[schedule]`.
    fn schedule(&mut self, s: &RawSchedule) -> Schedule {
        let cron = match &s.cron {
            None => "0 */15 * * * *".to_string(),
            Some(v) => match normalise_cron(v.get_ref()) {
                Ok(cron) => cron,
                Err(e) => {
                    self.at("schedule.cron", v, e);
                    String::new()
                }
            },
        };
        let timezone = match &s.timezone {
            None => chrono_tz::UTC,
            Some(v) => v.get_ref().trim().parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                self.at("schedule.timezone", v, format!("{:?} is not an IANA time zone; write it like \"UTC\" or \"Europe/Berlin\"", v.get_ref()));
                chrono_tz::UTC
            }),
        };
        let shutdown_grace = self
            .duration("schedule.shutdown_grace", &s.shutdown_grace)
            .unwrap_or(Duration::from_secs(25));
        let reconcile = self
            .duration("schedule.reconcile", &s.reconcile)
            .unwrap_or(Duration::from_secs(86_400));
        if let (Some(v), true) = (&s.reconcile, reconcile > Duration::from_secs(7 * 86_400)) {
            self.at(
                "schedule.reconcile",
                v,
                "must be at most 7d: a deletion the newest-first reads missed waits for the next whole walk, and Zendesk scrubs deleted tickets after about 30 days".to_string(),
            );
        }
        let check_share = match &s.check_share {
            None => 0.5,
            Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => *v.get_ref(),
            Some(v) => {
                self.at(
                    "schedule.check_share",
                    v,
                    format!("{} is out of range: write a share of the listing quota above 0 and at most 1, e.g. 0.5 (half)", v.get_ref()),
                );
                0.5
            }
        };
        let latency_bound = self.duration("schedule.latency_bound", &s.latency_bound);
        Schedule {
            cron,
            timezone,
            shutdown_grace,
            reconcile,
            check_share,
            latency_bound,
        }
    }

    /// `[audit]`.
    /// `[audit]` with a PostgreSQL URL: no password in it, a known
    /// `sslmode`, at most one place for the password.
    fn postgres_audit(&mut self, a: &RawAudit, v: &Spanned<String>) -> PostgresAudit {
        let text = v.get_ref().trim();
        match url::Url::parse(text) {
            Err(e) => self.at(
                "audit.database",
                v,
                format!(
                    "is not a PostgreSQL URL ({e}): write it as postgres://USER@HOST:PORT/DATABASE"
                ),
            ),
            Ok(url) => {
                if url.password().is_some()
                    || url
                        .query_pairs()
                        .any(|(k, _)| k == "password" || k == "passfile")
                {
                    self.at(
                        "audit.database",
                        v,
                        "holds a password: the config is no place for it; put it in a file named by audit.password_file (mode 0600) or an environment variable named by audit.password_env, and remove it from the URL",
                    );
                }
                let modes = [
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ];
                for (key, value) in url.query_pairs() {
                    if key == "sslmode" && !modes.contains(&value.as_ref()) {
                        self.at(
                            "audit.database",
                            v,
                            format!("sslmode={value} is not one of {}", modes.join(", ")),
                        );
                    }
                }
            }
        }
        if let (Some(_), Some(env)) = (&a.password_file, &a.password_env) {
            self.at(
                "audit.password_env",
                env,
                "and audit.password_file are both set: keep one",
            );
        }
        PostgresAudit {
            url: text.to_string(),
            password_file: a
                .password_file
                .as_ref()
                .map(|p| PathBuf::from(p.get_ref().trim())),
            password_env: a
                .password_env
                .as_ref()
                .map(|e| e.get_ref().trim().to_string()),
        }
    }

    fn audit(&mut self, a: &RawAudit) -> AuditSettings {
        let keep_details = self.duration("audit.keep_details", &a.keep_details);
        if let (Some(keep), Some(v)) = (keep_details, &a.keep_details)
            && keep < Duration::from_secs(31 * 86_400)
        {
            self.at(
                "audit.keep_details",
                v,
                "must be at least 31d: a ticket's details are needed until Zendesk's own scrub (30 days) has settled it".to_string(),
            );
        }

        let postgres = a
            .database
            .as_ref()
            .filter(|v| is_postgres_url(v.get_ref().trim()))
            .map(|v| self.postgres_audit(a, v));
        for (key, value) in [
            ("audit.password_file", &a.password_file),
            ("audit.password_env", &a.password_env),
        ] {
            if let (Some(v), None) = (value, &postgres) {
                self.at(
                    key,
                    v,
                    "is for a PostgreSQL audit database (audit.database = \"postgres://...\"): an SQLite file has no password; remove it",
                );
            }
        }
        let database = match &a.database {
            None => "zd-retention.db".to_string(),
            Some(_) if postgres.is_some() => String::new(),
            Some(v) => {
                let text = v.get_ref().trim();
                let problem = if text.is_empty() {
                    Some("is empty: give a file path such as \"zd-retention.db\"".to_string())
                } else {
                    database_path_problem(Path::new(text), self.look_at_files)
                };
                if let Some(problem) = problem {
                    self.at("audit.database", v, problem);
                }
                text.to_string()
            }
        };

        let signing_key_file = match &a.signing_key_file {
            Some(v) if v.get_ref().trim().is_empty() => {
                self.at(
                    "audit.signing_key_file",
                    v,
                    "is empty: give the key file's path (make one with `zd-retention audit keygen`), or leave the key out for unsigned records".to_string(),
                );
                None
            }
            Some(v) => Some(PathBuf::from(v.get_ref().trim())),
            None => None,
        };
        let signing_key_line = a.signing_key_file.as_ref().map(|v| self.line_of(v.span()));
        AuditSettings {
            signing_key_line,
            database: PathBuf::from(database),
            postgres,
            record_subjects: a.record_subjects.unwrap_or(false),
            keep_details,
            signing_key_file,
        }
    }

    /// `[safety]`: the settings, and the floor every rule is read with
    /// (`min_age`, `protect_ids`).
    fn safety(&mut self, s: &RawSafety) -> (Safety, Duration, BTreeSet<TicketId>) {
        let min_age = self
            .duration("safety.min_age", &s.min_age)
            .unwrap_or(Duration::from_secs(3600));
        let max_purges_per_run = match &s.max_purges_per_run {
            None => 5000,
            Some(v) if *v.get_ref() >= 1 => *v.get_ref() as u64,
            Some(v) => {
                self.at(
                    "safety.max_purges_per_run",
                    v,
                    format!(
                        "{} is not allowed: give a positive number, such as 5000",
                        v.get_ref()
                    ),
                );
                0
            }
        };
        let mut protect_ids = BTreeSet::new();
        if let Some(v) = &s.protect_ids {
            for id in v.get_ref() {
                match u64::try_from(*id) {
                    Ok(id) if id > 0 => {
                        protect_ids.insert(TicketId::new(id));
                    }
                    _ => self.at(
                        "safety.protect_ids",
                        v,
                        format!("{id} is not a ticket id: ids are positive whole numbers"),
                    ),
                }
            }
        }

        let safety = Safety {
            dry_run: s.dry_run.unwrap_or(true),
            max_purges_per_run,
            purge_while_scanning: s.purge_while_scanning.unwrap_or(false),
        };
        (safety, min_age, protect_ids)
    }

    /// `[server]`.
    fn server(&mut self, server: &RawServer) -> Option<std::net::SocketAddr> {
        server.listen.as_ref().and_then(|v| {
            v.get_ref()
                .trim()
                .parse()
                .map_err(|_| {
                    self.at(
                        "server.listen",
                        v,
                        format!(
                            "{:?} is not an address: write it like \"127.0.0.1:9464\"",
                            v.get_ref()
                        ),
                    )
                })
                .ok()
        })
    }

    /// `[[rules]]`, each checked against the safety floor.
    fn rules(&mut self, raw_rules: &[Spanned<RawRule>], min_age: Duration) -> Vec<RetentionRule> {
        let mut names = BTreeSet::new();
        raw_rules
            .iter()
            .enumerate()
            .map(|(i, spanned)| self.rule(i, spanned, &mut names, min_age))
            .collect()
    }

    /// A rule's list conditions (`previous_state`, `actor_ids`,
    /// `actor_names`): an empty list matches nothing and is refused.
    fn rule_lists(&mut self, i: usize, r: &RawRule, rule: &mut RetentionRule) {
        let key = |field: &str| format!("rules[{i}].{field}");
        if let Some(v) = &r.previous_state {
            if v.get_ref().is_empty() {
                self.at(key("previous_state"), v, "is an empty list: no ticket could match; list states such as [\"solved\", \"closed\"] or remove the key");
            }
            rule.previous_state = Some(
                v.get_ref()
                    .iter()
                    .map(|s| crate::rules::normalize(s))
                    .collect(),
            );
        }
        if let Some(v) = &r.actor_ids {
            let mut ids = BTreeSet::new();
            for id in v.get_ref() {
                match u64::try_from(*id) {
                    Ok(id) => {
                        ids.insert(id);
                    }
                    Err(_) => self.at(
                        key("actor_ids"),
                        v,
                        format!("{id} is not a user id: ids are positive whole numbers"),
                    ),
                }
            }
            if v.get_ref().is_empty() {
                self.at(
                    key("actor_ids"),
                    v,
                    "is an empty list: no ticket could match; list user ids or remove the key",
                );
            }
            rule.actor_ids = Some(ids);
        }
        if let Some(v) = &r.actor_names {
            if v.get_ref().is_empty() {
                self.at(
                    key("actor_names"),
                    v,
                    "is an empty list: no ticket could match; list names or remove the key",
                );
            }
            rule.actor_names = Some(
                v.get_ref()
                    .iter()
                    .map(|s| crate::rules::normalize(s))
                    .collect(),
            );
        }
    }

    /// One `[[rules]]` entry: its name unique, its action, its conditions,
    /// and no purge of every ticket unless `match_all` says so.
    fn rule(
        &mut self,
        i: usize,
        spanned: &Spanned<RawRule>,
        names: &mut BTreeSet<String>,
        min_age: Duration,
    ) -> RetentionRule {
        let r = spanned.get_ref();
        let key = |field: &str| format!("rules[{i}].{field}");
        let name = r.name.get_ref().trim().to_string();
        if name.is_empty() {
            self.at(
                key("name"),
                &r.name,
                "is empty: give each rule a short unique name",
            );
        } else if name.chars().any(|c| {
            c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
        }) {
            self.at(
                key("name"),
                &r.name,
                "holds a line break, a control character or an invisible direction mark: a rule name is one plain line (it is printed in reports and certificates)".to_string(),
            );
        } else if !names.insert(name.clone()) {
            self.at(
                key("name"),
                &r.name,
                format!("{name:?} is used by an earlier rule: rule names must be unique"),
            );
        }
        let action = match r.action.get_ref().trim() {
            "purge" => RuleAction::Purge,
            "keep" => RuleAction::Keep,
            other => {
                self.at(
                    key("action"),
                    &r.action,
                    format!("{other:?} is not an action: use \"purge\" or \"keep\""),
                );
                RuleAction::Keep
            }
        };
        let mut rule = RetentionRule::new(name.clone(), action);
        rule.older_than = self.duration(&key("older_than"), &r.older_than);
        rule.younger_than = self.duration(&key("younger_than"), &r.younger_than);
        if let (Some(o), Some(y), Some(v)) = (rule.older_than, rule.younger_than, &r.younger_than)
            && o >= y
        {
            self.at(key("younger_than"), v, "is not above older_than: no ticket can match both; raise younger_than or lower older_than");
        }
        self.rule_lists(i, r, &mut rule);
        if let Some(v) = &r.subject_matches {
            match RegexBuilder::new(v.get_ref()).size_limit(1 << 20).build() {
                Ok(re) => rule.subject_matches = Some(re),
                Err(e) => {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("invalid")
                        .trim()
                        .to_string();
                    self.at(key("subject_matches"), v, format!("{:?} is not a valid regular expression ({first}); see https://docs.rs/regex for the syntax", v.get_ref()));
                }
            }
        }
        rule.match_all = r.match_all.unwrap_or(false);
        let subject_invalid = r.subject_matches.is_some() && rule.subject_matches.is_none();
        if action == RuleAction::Purge
            && !rule.has_condition()
            && !rule.match_all
            && !subject_invalid
        {
            self.at(key("action"), &r.action, format!("rule {name:?} would purge every deleted ticket: add a condition (older_than, previous_state, actor_ids, ...) or, if that is really meant, match_all = true"));
        } else if action == RuleAction::Purge
            && rule.has_condition()
            && !subject_invalid
            && !rule.has_effective_condition(min_age)
        {
            // conditions that select everything in disguise
            let why = "its conditions leave nothing out (an older_than not above safety.min_age, a younger_than of 30 days or more, every standard previous_state, or a subject_matches that matches any subject)";
            self.at(key("action"), &r.action, format!("rule {name:?} would purge every deleted ticket: {why}; add a real condition or, if that is really meant, match_all = true"));
        }
        if rule.match_all && rule.has_condition() {
            self.at(key("name"), &r.name, "match_all = true together with conditions is ambiguous: remove match_all or the conditions");
        }
        rule
    }
}

/// The folder of a systemd credential (`/run/credentials/<unit>/<name>`)
/// that is not there for this process: outside the service, where systemd
/// has not made it (inside, `$CREDENTIALS_DIRECTORY` is set).
fn systemd_credential_elsewhere(path: &Path) -> Option<&Path> {
    (std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
        && path.starts_with("/run/credentials/")
        && !path.exists())
    .then(|| path.parent())
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[zendesk]
subdomain = "acme"
email = "ops@acme.example"
token_env = "ZENDESK_API_TOKEN"
"#;

    #[test]
    fn a_config_version_keeps_subject_patterns_only_with_record_subjects() {
        let rules = "[[rules]]\nname = \"hold\"\naction = \"keep\"\nsubject_matches = \"(?i)Max Mustermann\"\n";
        let text = format!("{MINIMAL}{rules}");
        let version = Config::parse(&text, "t.toml").unwrap().version_settings();
        assert!(!version.contains("Mustermann"), "{version}");
        assert!(version.contains("fingerprint"), "{version}");
        assert!(!version.contains("ZENDESK_API_TOKEN") && !version.contains("ops@acme"));
        let text = format!("{MINIMAL}[audit]\nrecord_subjects = true\n{rules}");
        let version = Config::parse(&text, "t.toml").unwrap().version_settings();
        assert!(version.contains("Max Mustermann"), "{version}");
    }

    #[test]
    fn minimal_config_takes_safe_defaults() {
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert!(c.safety.dry_run);
        assert_eq!(c.zendesk.base_url.as_str(), "https://acme.zendesk.com/");
        assert_eq!(c.schedule.cron, "0 */15 * * * *");
        assert_eq!(c.policy.min_age, Duration::from_secs(3600));
        assert!(c.policy.rules.is_empty());
        assert!(!c.audit.record_subjects);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}\n[safety]\ndry_rnu = false\n");
        let err = Config::parse(&text, "t.toml").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("dry_rnu"), "{shown}");
        assert_eq!(err.problems[0].line, Some(8), "{shown}");
    }

    #[test]
    fn purge_rule_without_condition_is_refused_unless_match_all() {
        let text = format!("{MINIMAL}\n[[rules]]\nname = \"all\"\naction = \"purge\"\n");
        let err = Config::parse(&text, "t.toml").unwrap_err();
        assert!(err.to_string().contains("match_all = true"), "{err}");
        let text =
            format!("{MINIMAL}\n[[rules]]\nname = \"all\"\naction = \"purge\"\nmatch_all = true\n");
        assert!(Config::parse(&text, "t.toml").is_ok());
    }

    proptest::proptest! {
        /// Every duration key, given any number with any unit: refused or
        /// accepted, never a panic, and nothing longer than 100 years gets
        /// through to a clock.
        #[test]
        fn config_durations_never_panic_and_stay_within_a_century(
            n in "[0-9]{1,25}",
            unit in "(ns|ms|s|m|h|d|w|M|y)",
            key in 0usize..10,
        ) {
            let value = format!("{n}{unit}");
            let (table, line) = [
                ("zendesk", "request_timeout"),
                ("zendesk", "job_poll_interval"),
                ("zendesk", "job_timeout"),
                ("zendesk", "clock_skew"),
                ("schedule", "shutdown_grace"),
                ("schedule", "reconcile"),
                ("schedule", "latency_bound"),
                ("audit", "keep_details"),
                ("safety", "min_age"),
                ("rules", "older_than"),
            ][key];
            let text = if table == "rules" {
                format!("{MINIMAL}[[rules]]\nname = \"r\"\naction = \"purge\"\nprevious_state = [\"closed\"]\n{line} = \"{value}\"\n")
            } else if table == "zendesk" {
                MINIMAL.replace("[zendesk]\n", &format!("[zendesk]\n{line} = \"{value}\"\n"))
            } else {
                format!("{MINIMAL}[{table}]\n{line} = \"{value}\"\n")
            };
            if let Ok(c) = Config::parse(&text, "t.toml") {
                let longest = crate::human::LONGEST;
                proptest::prop_assert!(c.zendesk.retry.request_timeout <= longest);
                proptest::prop_assert!(c.zendesk.job_poll_interval <= longest);
                proptest::prop_assert!(c.zendesk.job_timeout <= longest);
                proptest::prop_assert!(c.schedule.shutdown_grace <= longest);
                proptest::prop_assert!(c.schedule.latency_bound.is_none_or(|d| d <= longest));
                proptest::prop_assert!(c.audit.keep_details.is_none_or(|d| d <= longest));
                proptest::prop_assert!(c.policy.min_age <= longest);
                proptest::prop_assert!(c.policy.rules.iter().all(|r| r.older_than.is_none_or(|d| d <= longest)));
            }
        }
    }

    #[test]
    fn every_problem_of_every_broken_config_carries_its_line() {
        let mut files: Vec<_> = std::fs::read_dir("tests/configs/bad")
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            // as check-config reads it: the file, then the credential and
            // the signing key
            let err = match Config::load(&file) {
                Err(e) => e,
                Ok(c) => c
                    .auth()
                    .err()
                    .or_else(|| c.chain_signer().err())
                    .unwrap_or_else(|| panic!("{} is not refused", file.display())),
            };
            for p in &err.problems {
                assert!(p.line.is_some(), "{}: {p:?}", file.display());
            }
        }
    }

    #[test]
    fn five_field_cron_gains_seconds() {
        assert_eq!(normalise_cron("*/5 * * * *").unwrap(), "0 */5 * * * *");
        assert!(normalise_cron("every tuesday").is_err());
        assert!(normalise_cron("0 61 * * * *").is_err());
    }

    #[test]
    fn six_field_cron_is_kept_and_wrong_counts_are_named() {
        assert_eq!(
            normalise_cron("  0  */15 * * * * ").unwrap(),
            "0 */15 * * * *"
        );
        let seven = normalise_cron("0 0 * * * * 2026").unwrap_err();
        assert!(seven.contains("7 fields"), "{seven}");
        assert!(normalise_cron("").unwrap_err().contains("0 fields"));
        // the scheduler's own parser: names and ranges it accepts
        assert!(normalise_cron("0 30 2 * * MON-FRI").is_ok());
        // five fields: minute 0 of hour 25
        assert!(normalise_cron("0 25 * * *").is_err());
    }
}
