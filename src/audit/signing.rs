//! Signed chain heads: with `[audit] signing_key_file`, every transaction
//! that appends to the hash chain records, before it commits, the head it
//! leaves and the entries it added, signed with an Ed25519 key; a run's end
//! is such a head marked `end`. `audit verify --public-key` then catches a
//! database rewritten and re-chained without the key, rows added without
//! it, and heads removed, edited or added by hand. Keys are PKCS#8 PEM, as
//! `openssl genpkey -algorithm ed25519` writes them; `audit keygen` makes a
//! pair.

use std::collections::HashMap;

use serde::Serialize;

use super::heads::{ChainHead, head_message};
use super::keys::ChainVerifier;
use super::store::{AuditStore, RunId};

/// What `verify --public-key` found of the signatures.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    pub key_id: String,
    /// Signed heads that verify and match the chain.
    pub signed: i64,
    /// The last signed head's entry.
    pub last_signed: Option<i64>,
    /// Entries written before the first signed head (1 to this): the first
    /// signature vouches for them only as they stood when it was made.
    pub before_signing: i64,
    /// When the first signed head was made, and by which run.
    pub signing_began: Option<(String, Option<RunId>)>,
    pub problem: Option<String>,
    /// The problem means the records were altered (not only that they
    /// cannot be checked with the keys given).
    pub tampered: bool,
}

impl AuditStore {
    /// The head recorded at `run`'s end, if any.
    pub async fn chain_head_of(&self, run: RunId) -> anyhow::Result<Option<ChainHead>> {
        Ok(sqlx::query_as::<_, ChainHead>(r#"SELECT seq, from_seq, run_id AS run_id, kind, head, recorded_at, key_id, signature FROM chain_heads
             WHERE run_id = $1 AND kind IN ('end', 'interrupted') ORDER BY seq DESC LIMIT 1"#)
        .bind(run)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether any head is signed.
    pub async fn is_signed(&self) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar::<_, i64>(
            r#"SELECT COUNT(*) AS n FROM chain_heads WHERE signature IS NOT NULL"#,
        )
        .fetch_one(&self.pool)
        .await?
            > 0)
    }

    /// Checks the signed heads with `keys`: each signature holds, each head
    /// is still the chain's entry at its number, each signed head begins
    /// where the one before ended (an entry appended without the key is a
    /// gap), no entry follows the last signed head, and every run that
    /// ended since signing began has a signed end. Run after
    /// [`Self::verify_chain`] found the chain whole: a chain recomputed
    /// after a rewrite is whole, but its heads are no longer those signed.
    pub async fn verify_signatures(
        &self,
        keys: &[ChainVerifier],
    ) -> anyhow::Result<SignatureReport> {
        let mut key_ids: Vec<String> = keys.iter().map(ChainVerifier::key_id).collect();
        key_ids.dedup();
        let mut report = SignatureReport {
            key_id: key_ids.join(", "),
            signed: 0,
            last_signed: None,
            before_signing: 0,
            signing_began: None,
            problem: None,
            tampered: true,
        };
        let heads: Vec<ChainHead> = sqlx::query_as::<_, ChainHead>(r#"SELECT seq, from_seq, run_id AS run_id, kind, head, recorded_at, key_id, signature FROM chain_heads
             WHERE signature IS NOT NULL ORDER BY seq"#)
        .fetch_all(&self.pool)
        .await?;
        // the chain's hash at each signed head's entry, in one read
        let chain: HashMap<i64, String> = sqlx::query_as(
            "SELECT c.seq, c.hash FROM audit_chain c JOIN chain_heads h ON h.seq = c.seq
             WHERE h.signature IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let keyed: Vec<(String, &ChainVerifier)> = keys.iter().map(|k| (k.key_id(), k)).collect();
        let mut previous: Option<&ChainHead> = None;
        for h in &heads {
            if let Some(problem) = check_head(h, previous, &keyed, &chain, &report.key_id) {
                report.tampered = !problem.starts_with("cannot verify");
                report.problem = Some(problem);
                return Ok(report);
            }
            report.signed += 1;
            report.last_signed = Some(h.seq);
            previous = Some(h);
        }
        let Some(last) = previous else {
            report.problem = Some(
                "cannot verify: no chain head is signed (the records were written without a key, or their signed heads were removed)"
                    .into(),
            );
            report.tampered = false;
            return Ok(report);
        };
        if let Some(first) = heads.first() {
            report.before_signing = first.from_seq - 1;
            report.signing_began = Some((first.recorded_at.clone(), first.run_id));
        }
        if let Some(problem) = self.stray_heads(heads[0].seq).await? {
            report.problem = Some(problem);
            return Ok(report);
        }
        let after: Option<i64> = sqlx::query_scalar(r#"SELECT MAX(seq) AS seq FROM audit_chain"#)
            .fetch_one(&self.pool)
            .await?;
        if let Some(end) = after.filter(|end| *end > last.seq) {
            report.problem = Some(format!(
                "chain entries {} to {end} follow the last signed head: written without the key, or added after it",
                last.seq + 1
            ));
            return Ok(report);
        }
        let first_run = heads
            .iter()
            .find_map(|h| h.run_id)
            .unwrap_or(RunId::new(i64::MAX));
        let unsigned: Option<RunId> = sqlx::query_scalar(
            r#"SELECT MIN(r.id) AS id FROM runs r
             WHERE r.id >= $1 AND r.status <> 'running'
               AND NOT EXISTS (SELECT 1 FROM chain_heads h WHERE h.run_id = r.id
                               AND h.kind IN ('end', 'interrupted') AND h.signature IS NOT NULL)"#,
        )
        .bind(first_run)
        .fetch_one(&self.pool)
        .await?;
        if let Some(run) = unsigned {
            report.problem = Some(format!(
                "run {run} ended without a signed chain head (signing began at run {first_run}): its end was removed, or it ran without the key"
            ));
        }
        Ok(report)
    }

    /// Head rows that no signature vouches for, in the signed stretch: an
    /// unsigned head after signing began, or a head of an entry the chain
    /// does not have (a certificate would show it).
    async fn stray_heads(&self, first_signed: i64) -> anyhow::Result<Option<String>> {
        let unsigned: Option<i64> = sqlx::query_scalar(
            r#"SELECT MIN(seq) AS seq FROM chain_heads WHERE signature IS NULL AND seq > $1"#,
        )
        .bind(first_signed)
        .fetch_one(&self.pool)
        .await?;
        if let Some(seq) = unsigned {
            return Ok(Some(format!(
                "an unsigned chain head at entry {seq} follows signed ones: added outside zd-retention, or written without the key"
            )));
        }
        let unmatched: Option<i64> = sqlx::query_scalar(
            r#"SELECT MIN(h.seq) AS seq FROM chain_heads h LEFT JOIN audit_chain c ON c.seq = h.seq
             WHERE c.hash IS NULL OR c.hash <> h.head"#,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(unmatched.map(|seq| {
            format!("the chain head recorded at entry {seq} is not the chain's entry there: it was added or changed outside zd-retention")
        }))
    }
}

/// One signed head against the keys (with their ids), the chain's hash at
/// its entry, and the head before it. Pure.
fn check_head(
    h: &ChainHead,
    previous: Option<&ChainHead>,
    keys: &[(String, &ChainVerifier)],
    chain: &HashMap<i64, String>,
    key_ids: &str,
) -> Option<String> {
    let signature = h.signature.as_deref().unwrap_or("");
    let Some((_, key)) = keys
        .iter()
        .find(|(id, _)| Some(id.as_str()) == h.key_id.as_deref())
    else {
        // a key given that verifies it all the same: the key id was edited
        if keys
            .iter()
            .any(|(_, k)| k.verifies(&head_message(h), signature))
        {
            return Some(format!(
                "the signed chain head at entry {} names key {} but was signed by a key given: its record was changed",
                h.seq,
                h.key_id.as_deref().unwrap_or("?"),
            ));
        }
        return Some(format!(
            "cannot verify: the chain head at entry {} names key {}, not one given ({key_ids}): pass that key's public half, or its record was changed",
            h.seq,
            h.key_id.as_deref().unwrap_or("?"),
        ));
    };
    if !key.verifies(&head_message(h), signature) {
        return Some(format!(
            "the signed chain head at entry {} does not verify: its record was changed",
            h.seq
        ));
    }
    if chain.get(&h.seq) != Some(&h.head) {
        return Some(format!(
            "chain entry {} is not the one signed{}: the records up to it were rewritten and the chain recomputed",
            h.seq,
            h.run_id.map(|r| format!(" in run {r}")).unwrap_or_default()
        ));
    }
    if let Some(p) = previous
        && h.from_seq != p.seq + 1
    {
        return Some(format!(
            "chain entries {} to {} were not written under a signature (the signed heads at entries {} and {} do not meet): written without the key, or inserted",
            p.seq + 1,
            h.from_seq - 1,
            p.seq,
            h.seq
        ));
    }
    None
}
