//! Client-side encryption of backups and archived WAL: AES-256-GCM with a random 96-bit nonce
//! per object (each pack chunk, each WAL segment, each manifest), and associated data that ties
//! the ciphertext to what it is (a chunk to its SHA-256, a segment to its name), so a swapped or
//! altered object fails to decrypt instead of restoring garbage.
//!
//! Keys are 32 bytes, read from `<key directory>/<key id>.key` (64 hex digits) — a file only the
//! server's OS user may read — and never stored anywhere else.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NONCE_LEN: usize = 12;
/// Leads every sealed object: the format and the key id, so a reader knows which key it needs.
const MAGIC: &[u8] = b"ATKENC1\n";

/// A key, by id, as read from its file.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id) // never the key itself
    }
}

/// Where keys are read from: `<dir>/<id>.key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDir(pub Option<PathBuf>);

/// A key id is a plain name: letters, digits, `-`, `_`, `.` (no path).
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl KeyDir {
    /// Reads key `id`, refusing a file that others may read.
    pub fn load(&self, id: &str) -> Result<Key, String> {
        if !valid_key_id(id) {
            return Err(format!(
                "invalid encryption key id \"{id}\" (letters, digits, -, _ and . only)"
            ));
        }
        let dir = self.0.as_ref().ok_or_else(|| {
            format!("encryption key \"{id}\" is needed, but no key directory is set (admin_toolkit.encryption_key_dir, or --encryption-key-dir)")
        })?;
        let path = dir.join(format!("{id}.key"));
        let meta = std::fs::metadata(&path).map_err(|e| {
            format!(
                "cannot read encryption key \"{id}\" ({}): {e}",
                path.display()
            )
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "encryption key file {} may be read by others; make it readable only by its owner (chmod 600)",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read encryption key \"{id}\" ({}): {e}",
                path.display()
            )
        })?;
        let bytes = parse_hex_key(text.trim()).ok_or_else(|| {
            format!(
                "encryption key file {} must hold 64 hexadecimal digits (32 bytes)",
                path.display()
            )
        })?;
        Ok(Key {
            id: id.to_string(),
            cipher: Aes256Gcm::new_from_slice(&bytes).map_err(|e| e.to_string())?,
        })
    }
}

fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

impl Key {
    /// A key from raw bytes (tests and benchmarks).
    pub fn from_bytes(id: &str, bytes: &[u8; 32]) -> Key {
        Key {
            id: id.to_string(),
            cipher: Aes256Gcm::new_from_slice(bytes).expect("32-byte key"),
        }
    }

    /// nonce ‖ ciphertext ‖ tag, authenticated with `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of `sealed`; an error when the key is wrong or any byte was changed.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err("the encrypted data is truncated".into());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| {
                format!(
                    "decryption with key \"{}\" failed: wrong key, or the data was altered",
                    self.id
                )
            })
    }
}

/// A whole object sealed with its key id in the clear in front: `MAGIC`, id, `\n`, sealed.
pub fn seal_object(key: &Key, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(key.id.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&key.seal(aad, plaintext)?);
    Ok(out)
}

/// The key id of a sealed object; `None` for a plain one.
pub fn sealed_key_id(bytes: &[u8]) -> Option<&str> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The plaintext of an object: as is when plain, opened with its key from `keys` when sealed.
/// `what` names the object in errors.
pub fn open_object(
    keys: &KeyDir,
    aad: &[u8],
    bytes: Vec<u8>,
    what: &str,
) -> Result<Vec<u8>, String> {
    let Some(id) = sealed_key_id(&bytes) else {
        return Ok(bytes);
    };
    let key = keys
        .load(id)
        .map_err(|e| format!("{what} is encrypted: {e}"))?;
    let body = &bytes[MAGIC.len() + id.len() + 1..];
    key.open(aad, body).map_err(|e| format!("{what}: {e}"))
}

/// Whether `path` holds a key directory that is usable (exists, outside `data_dir`).
pub fn check_key_dir(path: &Path, data_dir: &Path) -> Result<(), String> {
    let canonical = crate::storage::canonical_path(path);
    if canonical.starts_with(crate::storage::canonical_path(data_dir)) {
        return Err(format!(
            "the encryption key directory \"{}\" must be outside the data directory (a backup would copy the keys)",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> Key {
        Key::from_bytes(id, &[byte; 32])
    }

    #[test]
    fn sealed_data_opens_only_with_its_key_and_associated_data() {
        let k = key("k1", 7);
        let sealed = k.seal(b"chunk-a", b"secret row").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"secret row"));
        assert_eq!(k.open(b"chunk-a", &sealed).unwrap(), b"secret row");
        assert!(
            k.open(b"chunk-b", &sealed).is_err(),
            "bound to its associated data"
        );
        assert!(key("k1", 8).open(b"chunk-a", &sealed).is_err(), "wrong key");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open(b"chunk-a", &bad).is_err(), "flipped byte {i}");
        }
        assert_ne!(
            k.seal(b"x", b"same").unwrap(),
            k.seal(b"x", b"same").unwrap(),
            "fresh nonces"
        );
    }

    #[test]
    fn objects_carry_their_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotated-2.key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keys = KeyDir(Some(dir.path().to_path_buf()));
        let k = keys.load("rotated-2").unwrap();
        let object = seal_object(&k, b"000000010000000000000001", b"wal").unwrap();
        assert_eq!(sealed_key_id(&object), Some("rotated-2"));
        assert_eq!(
            open_object(&keys, b"000000010000000000000001", object.clone(), "x").unwrap(),
            b"wal"
        );
        let err = open_object(
            &KeyDir(None),
            b"000000010000000000000001",
            object.clone(),
            "WAL file x",
        )
        .unwrap_err();
        assert!(
            err.contains("WAL file x is encrypted") && err.contains("no key directory"),
            "{err}"
        );
        assert_eq!(
            open_object(&KeyDir(None), b"a", b"plain".to_vec(), "x").unwrap(),
            b"plain"
        );
        // a key readable by others is refused, and so are ids that are paths
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(keys.load("rotated-2").unwrap_err().contains("chmod 600"));
        for bad in ["../x", "a/b", "", ".hidden"] {
            assert!(keys.load(bad).is_err(), "{bad}");
        }
        std::fs::write(dir.path().join("short.key"), "abcd").unwrap();
        std::fs::set_permissions(
            dir.path().join("short.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(keys.load("short").unwrap_err().contains("64 hexadecimal"));
    }
}
