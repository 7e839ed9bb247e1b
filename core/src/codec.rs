//! One pipeline for the bytes the toolkit stores — pack chunks, WAL files, manifests: the
//! SHA-256 of the plain bytes, then compression, then sealing, each stage chosen by a `Codec`
//! value instead of written out where each kind is stored. The stored formats are unchanged
//! (backups and archives written by earlier versions read back as before).

use crate::crypto::{seal_object, Key};
use crate::storage::{compress, decompress, sha256_hex};

/// How plain bytes are compressed.
#[derive(Debug, Clone, Copy)]
pub enum Compression {
    /// Stored as they are (manifests).
    None,
    /// A zstd frame with a content checksum at this level (WAL files: read back without a
    /// known length).
    Frame(i32),
    /// A zstd block at this level, kept only when smaller; level 0 stores as is (pack chunks:
    /// the manifest records each one's length and whether it is compressed).
    BlockWhenSmaller(i32),
}

/// How compressed bytes are sealed (AES-256-GCM).
pub enum Sealing<'a> {
    None,
    /// With the key's id in a header in front, bound to `aad` (objects: WAL files, manifests).
    Object {
        key: &'a Key,
        aad: Vec<u8>,
    },
    /// Bound to the plain bytes' SHA-256, no header (pack chunks: the manifest names the key).
    ByDigest(&'a Key),
}

pub struct Codec<'a> {
    pub compression: Compression,
    pub sealing: Sealing<'a>,
}

/// What is stored, and what the manifest or sidecar records of it.
#[derive(Debug)]
pub struct Encoded {
    pub stored: Vec<u8>,
    /// SHA-256 of the plain bytes.
    pub sha256: String,
    pub compressed: bool,
}

impl Codec<'_> {
    pub fn encode(&self, plain: &[u8]) -> Result<Encoded, String> {
        self.encode_digested(plain, sha256_hex(plain))
    }

    /// `encode`, with the plain bytes' SHA-256 already known (a chunk compared with its
    /// earlier version first).
    pub fn encode_digested(&self, plain: &[u8], sha256: String) -> Result<Encoded, String> {
        let (packed, compressed) = match self.compression {
            Compression::None | Compression::BlockWhenSmaller(0) => (plain.to_vec(), false),
            Compression::Frame(level) => (compress(plain, level).map_err(|e| e.to_string())?, true),
            Compression::BlockWhenSmaller(level) => {
                let packed = zstd::bulk::compress(plain, level)
                    .map_err(|e| format!("compression failed: {e}"))?;
                // Incompressible data is stored as is.
                if packed.len() < plain.len() {
                    (packed, true)
                } else {
                    (plain.to_vec(), false)
                }
            }
        };
        let stored = match &self.sealing {
            Sealing::None => packed,
            Sealing::Object { key, aad } => seal_object(key, aad, &packed)?,
            Sealing::ByDigest(key) => key.seal(sha256.as_bytes(), &packed)?,
        };
        Ok(Encoded {
            stored,
            sha256,
            compressed,
        })
    }

    /// The plain bytes of what `encode` stored with `compressed` set as it said and, for a
    /// block, the plain length; checked against `sha256` when given. Objects sealed with a
    /// header are opened by their readers (which find the key by its id), then decoded here
    /// with `Sealing::None`.
    pub fn decode(
        &self,
        stored: &[u8],
        compressed: bool,
        len: usize,
        sha256: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        let opened;
        let packed = match &self.sealing {
            Sealing::ByDigest(key) => {
                let digest = sha256.ok_or("a chunk sealed by its digest needs the digest")?;
                opened = key.open(digest.as_bytes(), stored)?;
                &opened[..]
            }
            Sealing::None | Sealing::Object { .. } => stored,
        };
        let plain = match (self.compression, compressed) {
            (_, false) | (Compression::None, _) => packed.to_vec(),
            (Compression::Frame(_), true) => decompress(packed).map_err(|e| e.to_string())?,
            (Compression::BlockWhenSmaller(_), true) => zstd::bulk::decompress(packed, len)
                .map_err(|e| format!("cannot decompress: {e}"))?,
        };
        if let Some(expected) = sha256 {
            if sha256_hex(&plain) != expected {
                return Err("SHA-256 does not match the manifest".into());
            }
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{open_object, KeyDir};

    fn key() -> Key {
        Key::from_bytes("k1", &[7; 32])
    }

    #[test]
    fn every_stage_round_trips_and_sealing_binds_what_it_says() {
        let plain = b"a page of a table ".repeat(500);
        let k = key();
        let chunk = Codec {
            compression: Compression::BlockWhenSmaller(3),
            sealing: Sealing::ByDigest(&k),
        };
        let e = chunk.encode(&plain).unwrap();
        assert!(e.compressed && e.stored.len() < plain.len());
        assert_eq!(
            chunk
                .decode(&e.stored, true, plain.len(), Some(&e.sha256))
                .unwrap(),
            plain
        );
        let other = sha256_hex(b"another chunk");
        assert!(chunk
            .decode(&e.stored, true, plain.len(), Some(&other))
            .is_err());

        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let plain_block = Codec {
            compression: Compression::BlockWhenSmaller(3),
            sealing: Sealing::None,
        };
        let e = plain_block.encode(&random).unwrap();
        assert!(!e.compressed, "incompressible bytes are stored as they are");
        assert_eq!(e.stored, random);

        let wal = Codec {
            compression: Compression::Frame(3),
            sealing: Sealing::Object {
                key: &k,
                aad: b"bound".to_vec(),
            },
        };
        let e = wal.encode(&plain).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k1.key"), "07".repeat(32)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("k1.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let keys = KeyDir(Some(dir.path().to_path_buf()));
        let opened = open_object(&keys, b"bound", e.stored.clone(), "wal").unwrap();
        let framed = Codec {
            compression: Compression::Frame(3),
            sealing: Sealing::None,
        };
        assert_eq!(
            framed.decode(&opened, true, 0, Some(&e.sha256)).unwrap(),
            plain
        );
        assert!(open_object(&keys, b"elsewhere", e.stored, "wal").is_err());
    }
}
