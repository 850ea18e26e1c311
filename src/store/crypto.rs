//! At-rest encryption of datasource passwords with XChaCha20-Poly1305.
//!
//! The key comes from `SLUICE_MASTER_KEY` (32 bytes, base64 or hex) or, when that is unset, from
//! `<data_dir>/master.key`, generated with mode 0600 on first start. Each ciphertext is bound to
//! its datasource id as associated data, so a ciphertext copied onto another row does not decrypt.

use base64::Engine;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("SLUICE_MASTER_KEY must be 32 bytes encoded as base64 or hex")]
    BadKey,
    #[error("master key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("a stored secret could not be decrypted (wrong master key?)")]
    Decrypt,
}

pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(MasterKey { cipher })
    }

    /// Parses the environment form: base64 (standard or URL-safe) or hex of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .ok()
                    .filter(|b| b.len() == 32)
            })
            .or_else(|| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t.trim_end_matches('='))
                    .ok()
                    .filter(|b| b.len() == 32)
            })
            .ok_or(CryptoError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    /// The environment's key if given, else the data directory's key file (created if missing).
    pub fn load(env_value: Option<&str>, data_dir: &Path) -> Result<Self, CryptoError> {
        if let Some(v) = env_value {
            return Self::parse(v);
        }
        let path = data_dir.join("master.key");
        let err = |e| CryptoError::KeyFile(path.display().to_string(), e);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let text = hex::encode(key);
                write_private(&path, text.as_bytes()).map_err(err)?;
                Self::from_bytes(&key)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// nonce || ciphertext+tag
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let nonce = XNonce::generate();
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            // Encryption only fails for messages past the cipher's length limit (~256 GiB).
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, data: &[u8], aad: &str) -> Result<Vec<u8>, CryptoError> {
        if data.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = data.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// Creates a file readable only by its owner (0600), failing if it already exists.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_round_trips_and_is_bound_to_its_row() {
        let k = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let ct = k.encrypt(b"hunter2", "ds_1");
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.decrypt(&ct, "ds_1").unwrap(), b"hunter2");
        assert!(k.decrypt(&ct, "ds_2").is_err(), "another row's id fails");
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.decrypt(&ct, "ds_1").is_err(), "another key fails");
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_refuse_other_lengths() {
        assert!(MasterKey::parse(&hex::encode([1u8; 32])).is_ok());
        assert!(
            MasterKey::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_ok()
        );
        assert!(MasterKey::parse("short").is_err());
        assert!(MasterKey::parse(&hex::encode([1u8; 16])).is_err());
    }

    #[test]
    fn the_key_file_is_created_private_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = MasterKey::load(None, dir.path()).unwrap();
        let ct = k1.encrypt(b"x", "a");
        let k2 = MasterKey::load(None, dir.path()).unwrap();
        assert_eq!(k2.decrypt(&ct, "a").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
