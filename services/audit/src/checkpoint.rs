//! Signed retention checkpoints.
//!
//! Pruning removes old records; before it does, the head it removes up to
//! (sequence number, hash, time) is signed with an Ed25519 key that lives
//! outside the database. Verification starts from the newest checkpoint
//! whose signature holds, so the remaining chain stays verifiable, and a
//! database superuser who rewrites the chain cannot forge the checkpoint.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("writing {path}: {message}")]
    Write { path: String, message: String },
    #[error("{path} does not hold a 32-byte hex Ed25519 key")]
    Format { path: String },
    #[error("not a 32-byte hex Ed25519 public key")]
    PublicKey,
}

/// The public half: all that verifying checkpoints needs, so the host that
/// verifies never holds the key that signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    key: VerifyingKey,
}

impl CheckpointVerifier {
    /// From the hex form [`CheckpointKey::public_hex`] prints.
    pub fn from_hex(text: &str) -> Result<Self, CheckpointKeyError> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(CheckpointKeyError::PublicKey)?;
        VerifyingKey::from_bytes(&bytes)
            .map(|key| Self { key })
            .map_err(|_| CheckpointKeyError::PublicKey)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// Whether `signature` (hex) signs this checkpoint under this key.
    pub fn verify(&self, seq: i64, hash: &str, ts_us: i64, signature: &str) -> bool {
        verify_with(&self.key, seq, hash, ts_us, signature)
    }
}

/// The checkpoint signing key.
pub struct CheckpointKey {
    signing: SigningKey,
}

/// The message a checkpoint signs.
pub fn message(seq: i64, hash: &str, ts_us: i64) -> Vec<u8> {
    format!("sovra-audit-checkpoint-v1\n{seq}\n{hash}\n{ts_us}").into_bytes()
}

impl CheckpointKey {
    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<Self, CheckpointKeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| CheckpointKeyError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CheckpointKeyError::Format {
                path: path.display().to_string(),
            })?;
        Ok(Self {
            signing: SigningKey::from_bytes(&bytes),
        })
    }

    /// Reads the key at `path`, creating it (mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, CheckpointKeyError> {
        if path.exists() {
            return Self::load(path);
        }
        let write_err = |e: std::io::Error| CheckpointKeyError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        std::fs::write(path, hex::encode(signing.to_bytes())).map_err(write_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(write_err)?;
        }
        Ok(Self { signing })
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier {
            key: self.signing.verifying_key(),
        }
    }

    pub fn sign(&self, seq: i64, hash: &str, ts_us: i64) -> String {
        hex::encode(self.signing.sign(&message(seq, hash, ts_us)).to_bytes())
    }

    /// Whether `signature` (hex) signs this checkpoint under this key.
    pub fn verify(&self, seq: i64, hash: &str, ts_us: i64, signature: &str) -> bool {
        verify_with(&self.signing.verifying_key(), seq, hash, ts_us, signature)
    }
}

fn verify_with(key: &VerifyingKey, seq: i64, hash: &str, ts_us: i64, signature: &str) -> bool {
    let Some(sig) = hex::decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify(&message(seq, hash, ts_us), &Signature::from_bytes(&sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reload() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("k");
        let k = CheckpointKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        let sig = k.sign(10, "ab", 5);
        let again = CheckpointKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.public_hex(), again.public_hex());
        assert!(again.verify(10, "ab", 5, &sig));
        assert!(!again.verify(11, "ab", 5, &sig));
        assert!(!again.verify(10, "ab", 5, "00"));
        // The public key alone verifies; a wrong one does not.
        let public =
            CheckpointVerifier::from_hex(&k.public_hex()).unwrap_or_else(|e| panic!("{e}"));
        assert!(public.verify(10, "ab", 5, &sig));
        let other = CheckpointKey::load_or_create(&dir.path().join("other"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!other.verifier().verify(10, "ab", 5, &sig));
        assert!(CheckpointVerifier::from_hex("zz").is_err());
    }
}
