//! The keys that sign and check chain heads (Ed25519, PKCS#8 PEM, as
//! `openssl genpkey -algorithm ed25519` writes them; `audit keygen` makes a
//! pair). Pure: no store, no SQL.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

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
        // PKCS#8 v1 (the seed alone), as `openssl genpkey -algorithm
        // ed25519` writes it and as OpenSSL and most libraries read it
        let private = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        }
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

    pub(super) fn sign(&self, message: &str) -> String {
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

    pub(super) fn verifies(&self, message: &str, signature: &str) -> bool {
        let Ok(bytes) = hex::decode(signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.0.verify(message.as_bytes(), &signature).is_ok()
    }
}
