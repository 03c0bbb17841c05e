//! What every connection shares: the drivers (installed once), and a
//! PostgreSQL URL named for `pg_stat_activity` and shown without its
//! password. The bottom of the audit module with `kinds` and `keys`.

/// The drivers the store's pools may use (SQLite, PostgreSQL), installed
/// once per process before the first pool.
pub fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// A PostgreSQL URL as it may be shown: without its password.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            // a password given as a parameter is hidden the same way
            if u.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "(an unreadable PostgreSQL URL)".into(),
    }
}

/// `url` with an `application_name` naming this process (unless the URL
/// names one): how `pg_stat_activity` tells the nodes' sessions apart.
pub(crate) fn named(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.query_pairs().any(|(k, _)| k == "application_name") => {
            u.query_pairs_mut().append_pair(
                "application_name",
                &format!("zd-retention pid {}", std::process::id()),
            );
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Why a connection to the audit database failed, in the server's words
/// when it answered ("database \"x\" does not exist", "password
/// authentication failed for user \"y\""), without sqlx's repetition of
/// them and the server's source line.
pub(crate) fn refused_connection(e: sqlx::Error, shown: &str) -> anyhow::Error {
    let why = match &e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    anyhow::anyhow!("cannot connect to the audit database {shown}: {why}")
}
