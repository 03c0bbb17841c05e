//! Signed chain heads: with `[audit] signing_key_file`, each run's end signs
//! the chain's head (its entry number, hash and time) with an Ed25519 key,
//! so that a database rewritten and re-chained without the key is caught by
//! `audit verify --public-key`. Keys are PKCS#8 PEM, as `openssl genpkey
//! -algorithm ed25519` writes them; `audit keygen` makes a pair.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::*;

/// The private key that signs chain heads. Its `Debug` shows only the
/// public key's id: the key never reaches a log line.
#[derive(Clone)]
pub struct ChainSigner(SigningKey);

impl std::fmt::Debug for ChainSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainSigner(key {})", self.key_id())
    }
}

/// A public key that checks signed chain heads.
#[derive(Debug, Clone)]
pub struct ChainVerifier(VerifyingKey);

/// The id of a public key: the first 16 hex digits of its SHA-256.
fn key_id_of(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl ChainSigner {
    /// Reads a PKCS#8 PEM private key. The error never quotes the text.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(Self)
            .map_err(|_| {
                "not an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----); make one with `zd-retention audit keygen`"
                    .to_string()
            })
    }

    /// A new key pair from the operating system's randomness: the private
    /// key's PEM and the public key's.
    pub fn generate() -> anyhow::Result<(secrecy::SecretString, String)> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        let private = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("cannot encode the key: {e}"))?;
        let public = Self(key).public_key_pem()?;
        Ok((secrecy::SecretString::from(private.to_string()), public))
    }

    pub fn public_key_pem(&self) -> anyhow::Result<String> {
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("cannot encode the public key: {e}"))
    }

    pub fn key_id(&self) -> String {
        key_id_of(&self.0.verifying_key())
    }

    fn sign(&self, message: &str) -> String {
        hex::encode(self.0.sign(message.as_bytes()).to_bytes())
    }
}

impl ChainVerifier {
    /// Reads a public key: SPKI PEM (-----BEGIN PUBLIC KEY-----).
    pub fn from_pem(text: &str) -> Result<Self, String> {
        VerifyingKey::from_public_key_pem(text.trim())
            .map(Self)
            .map_err(|_| {
                "not an Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----), as `zd-retention audit keygen` writes it"
                    .to_string()
            })
    }

    pub fn key_id(&self) -> String {
        key_id_of(&self.0)
    }

    fn verifies(&self, message: &str, signature: &str) -> bool {
        let Ok(bytes) = hex::decode(signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.0.verify(message.as_bytes(), &signature).is_ok()
    }
}

/// What a signature covers: the run, the chain entry it ended at, that
/// entry's hash and the time. One line each, so no field can run into
/// another.
pub(super) fn head_message(run: RunId, seq: i64, head: &str, at: &str) -> String {
    format!("zd-retention chain head\nrun {run}\nentry {seq}\nhash {head}\nat {at}\n")
}

/// The chain head at one run's end, as recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ChainHead {
    pub run_id: RunId,
    pub seq: i64,
    pub head: String,
    pub recorded_at: String,
    pub key_id: Option<String>,
    pub signature: Option<String>,
}

/// What `verify --public-key` found of the signatures.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    pub key_id: String,
    /// Signed heads that verify and match the chain.
    pub signed: i64,
    /// The last run whose end is signed, and its chain entry.
    pub last_signed: Option<(RunId, i64)>,
    /// Chain entries after the last signed head (a run still going).
    pub entries_after: i64,
    pub problem: Option<String>,
}

/// Records the chain's head at a run's end in `tx`, signed with `signer`.
pub(super) async fn record_head(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    run: RunId,
    signer: Option<&ChainSigner>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (seq, head): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or((0, "genesis".into()));
    let at = timestamp(now);
    let (key_id, signature) = match signer {
        Some(s) => (
            Some(s.key_id()),
            Some(s.sign(&head_message(run, seq, &head, &at))),
        ),
        None => (None, None),
    };
    sqlx::query(
        "INSERT OR REPLACE INTO chain_heads (run_id, seq, head, recorded_at, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(run)
    .bind(seq)
    .bind(&head)
    .bind(&at)
    .bind(key_id)
    .bind(signature)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl AuditStore {
    /// The head recorded at `run`'s end, if any.
    pub async fn chain_head_of(&self, run: RunId) -> anyhow::Result<Option<ChainHead>> {
        Ok(sqlx::query_as("SELECT run_id, seq, head, recorded_at, key_id, signature FROM chain_heads WHERE run_id = ?")
            .bind(run)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether any run's end was signed.
    pub async fn is_signed(&self) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM chain_heads WHERE signature IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?
            > 0)
    }

    /// Checks every signed head with `key`: the signature holds, the head is
    /// the chain's hash at its entry, and every run that ended since the
    /// first signed one has a signed head. Run after [`Self::verify_chain`]
    /// has found the chain whole: a chain recomputed after a rewrite is
    /// whole, but its heads no longer match what was signed.
    pub async fn verify_signatures(
        &self,
        keys: &[ChainVerifier],
    ) -> anyhow::Result<SignatureReport> {
        let heads: Vec<ChainHead> = sqlx::query_as(
            "SELECT run_id, seq, head, recorded_at, key_id, signature FROM chain_heads ORDER BY run_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let key_ids: Vec<String> = keys.iter().map(ChainVerifier::key_id).collect();
        let mut report = SignatureReport {
            key_id: key_ids.join(", "),
            signed: 0,
            last_signed: None,
            entries_after: 0,
            problem: None,
        };
        let mut first_signed: Option<RunId> = None;
        for h in &heads {
            let Some(signature) = &h.signature else {
                continue;
            };
            first_signed.get_or_insert(h.run_id);
            let Some(key) = keys
                .iter()
                .find(|k| Some(k.key_id().as_str()) == h.key_id.as_deref())
            else {
                report.problem = Some(format!(
                    "run {}'s chain head is signed by key {}, not by the public key given ({}): pass that key's public half too",
                    h.run_id,
                    h.key_id.as_deref().unwrap_or("?"),
                    report.key_id
                ));
                return Ok(report);
            };
            if !key.verifies(
                &head_message(h.run_id, h.seq, &h.head, &h.recorded_at),
                signature,
            ) {
                report.problem = Some(format!(
                    "run {}'s signed chain head does not verify: its record was changed",
                    h.run_id
                ));
                return Ok(report);
            }
            let hash: Option<String> =
                sqlx::query_scalar("SELECT hash FROM audit_chain WHERE seq = ?")
                    .bind(h.seq)
                    .fetch_optional(&self.pool)
                    .await?;
            if hash.as_deref() != Some(h.head.as_str()) {
                report.problem = Some(format!(
                    "chain entry {} is not the one signed at run {}'s end: the records up to it were rewritten and the chain recomputed",
                    h.seq, h.run_id
                ));
                return Ok(report);
            }
            report.signed += 1;
            report.last_signed = Some((h.run_id, h.seq));
        }
        let Some(first) = first_signed else {
            report.problem = Some(
                "no run's end is signed: the records are unsigned (set [audit] signing_key_file)"
                    .into(),
            );
            return Ok(report);
        };
        // every run that ended since signing began: a signed head each
        let unsigned: Option<RunId> = sqlx::query_scalar(
            "SELECT MIN(r.id) FROM runs r LEFT JOIN chain_heads h ON h.run_id = r.id
             WHERE r.id >= ? AND r.status <> 'running' AND h.signature IS NULL",
        )
        .bind(first)
        .fetch_one(&self.pool)
        .await?;
        if let Some(run) = unsigned {
            report.problem = Some(format!(
                "run {run} ended without a signed chain head (signing began at run {first}): its head was removed, or it ran without the key"
            ));
            return Ok(report);
        }
        let last_seq = report.last_signed.map_or(0, |(_, seq)| seq);
        report.entries_after = sqlx::query_scalar("SELECT COUNT(*) FROM audit_chain WHERE seq > ?")
            .bind(last_seq)
            .fetch_one(&self.pool)
            .await?;
        Ok(report)
    }
}
