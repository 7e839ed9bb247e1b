//! WAL archiving decisions: which names are WAL files, and how a segment is stored — zstd with
//! a content checksum, plus a SHA-256 sidecar — so that archiving the same segment twice
//! succeeds and archiving different content under a stored name fails.

use crate::codec::{Codec, Compression, Encoded, Sealing};
use crate::crypto::{open_object, sealed_key_id, KeyDir};
use crate::storage::{decompress, sha256_hex, PutOutcome, Storage, StorageError};

/// A segment (24 hex digits), a timeline history file, a backup history file or a partial
/// segment, as PostgreSQL names them.
pub fn is_wal_file_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    };
    if hex(name, 24) {
        return true;
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest
            .split_once('.')
            .is_some_and(|(seg, off)| hex(seg, 24) && hex(off, 8));
    }
    false
}

/// zstd level for WAL: fast, and WAL compresses well at any level.
pub const WAL_COMPRESSION_LEVEL: i32 = 3;

pub fn data_object(name: &str) -> String {
    format!("{name}.zst")
}

pub fn checksum_object(name: &str) -> String {
    format!("{name}.sha256")
}

/// The object that binds an archive to one cluster: `system_identifier = <id>`, written with
/// the first file archived. Not a WAL file name, so nothing else is ever stored under it.
pub const ARCHIVE_MARKER: &str = "admin_toolkit.archive";

fn marker_text(system_identifier: &str) -> String {
    format!("system_identifier = {system_identifier}\n")
}

/// The cluster the archive in `storage` belongs to, from its marker; `None` for an archive
/// that has none yet.
pub fn archive_owner(storage: &dyn Storage) -> Result<Option<String>, StorageError> {
    match storage.get(ARCHIVE_MARKER) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes)
            .trim()
            .strip_prefix("system_identifier = ")
            .map(str::to_string)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Claims the archive in `storage` for cluster `system_identifier` (first use), or checks that
/// it is that cluster's: a second cluster pointed at the same location is refused, so that it
/// neither mixes its WAL into the first one's nor has its own refused later as conflicts.
pub fn claim_archive(storage: &dyn Storage, system_identifier: &str) -> Result<(), StorageError> {
    let owner = match archive_owner(storage)? {
        Some(owner) => owner,
        None => match storage.put_new(ARCHIVE_MARKER, marker_text(system_identifier).as_bytes()) {
            Ok(_) => return Ok(()),
            // Claimed concurrently, by this cluster or another: read who.
            Err(StorageError::Conflict(_)) => archive_owner(storage)?.unwrap_or_default(),
            Err(e) => return Err(e),
        },
    };
    if owner == system_identifier {
        Ok(())
    } else {
        Err(StorageError::Conflict(format!(
            "the WAL archive {} belongs to cluster {owner}, not to this one ({system_identifier}): one archive per cluster",
            storage.describe(ARCHIVE_MARKER)
        )))
    }
}

/// What a sealed WAL file is bound to: the cluster it belongs to and its name, so that neither
/// a segment stored under another name nor another cluster's segment sealed with the same key
/// decrypts.
fn bound_to(system_identifier: &str, name: &str) -> Vec<u8> {
    format!("admin_toolkit wal\n{system_identifier}\n{name}").into_bytes()
}

/// Archives one WAL file of cluster `system_identifier`, encrypted with key `key_id` from
/// `keys` when given (bound to the cluster and the name, [`bound_to`]). A plain file gets a
/// SHA-256 sidecar, written after the data, so a crash between the two is repaired by the
/// retry (the stored data is checked against the new copy); an encrypted one gets none (its
/// seal authenticates it, and a digest of the plaintext would tell what guessable files hold):
/// archiving it again is checked by opening the stored copy.
pub fn archive_wal(
    storage: &dyn Storage,
    system_identifier: &str,
    name: &str,
    contents: &[u8],
    keys: &KeyDir,
    key_id: Option<&str>,
) -> Result<PutOutcome, StorageError> {
    if !is_wal_file_name(name) {
        return Err(StorageError::Io(format!(
            "\"{name}\" is not a WAL file name"
        )));
    }
    let (data, sum) = (data_object(name), checksum_object(name));
    let key = match key_id {
        Some(id) => Some(keys.load(id).map_err(StorageError::Io)?),
        None => None,
    };
    let codec = Codec {
        compression: Compression::Frame(WAL_COMPRESSION_LEVEL),
        sealing: match &key {
            Some(key) => Sealing::Object {
                key,
                aad: bound_to(system_identifier, name),
            },
            None => Sealing::None,
        },
    };
    // Written first, checked after: the conditional write never replaces anything, and the
    // common case (a new file) costs no request beyond it.
    let Encoded {
        stored,
        sha256: sha,
        ..
    } = codec.encode(contents).map_err(StorageError::Io)?;
    let outcome = match storage.put_new(&data, &stored) {
        Ok(outcome) => outcome,
        // Sealed again (a new nonce), or compressed by another zstd: the same WAL if the
        // stored copy opens to the same bytes.
        Err(StorageError::Conflict(_)) => {
            same_as_stored(storage, system_identifier, name, keys, &sha)?;
            PutOutcome::AlreadyPresent
        }
        Err(e) => return Err(e),
    };
    if key_id.is_none() {
        storage.put_new(&sum, format!("{sha}\n").as_bytes())?;
    }
    Ok(outcome)
}

/// Whether the stored copy of `name` holds WAL with SHA-256 `sha`; a conflict otherwise.
fn same_as_stored(
    storage: &dyn Storage,
    system_identifier: &str,
    name: &str,
    keys: &KeyDir,
    sha: &str,
) -> Result<(), StorageError> {
    let data = data_object(name);
    let stored = storage.get(&data)?;
    let sealed = sealed_key_id(&stored).is_some();
    let stored_sha = match (sealed, storage.get(&checksum_object(name))) {
        (false, Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => sha256_hex(&decompress(&open(
            storage,
            Some(system_identifier),
            name,
            keys,
            stored,
        )?)?),
    };
    if stored_sha != sha {
        return Err(StorageError::Conflict(format!(
            "WAL file {name} is already archived with different content; refusing to overwrite it"
        )));
    }
    Ok(())
}

/// The compressed bytes of archived WAL file `name` from its stored `bytes`, decrypted when
/// they are sealed. Sealed for cluster `system_identifier` (the archive's owner, from its
/// marker, when `None`); a file sealed before WAL was bound to its cluster (toolkit 0.4.0 and
/// earlier: bound to its name only) still opens.
fn open(
    storage: &dyn Storage,
    system_identifier: Option<&str>,
    name: &str,
    keys: &KeyDir,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, StorageError> {
    let what = storage.describe(&data_object(name));
    let owner = match system_identifier {
        Some(s) => Some(s.to_string()),
        None => archive_owner(storage)?,
    };
    if let Some(owner) = owner {
        if let Ok(opened) = open_object(keys, &bound_to(&owner, name), bytes.clone(), &what) {
            return Ok(opened);
        }
    }
    open_object(keys, name.as_bytes(), bytes, &what).map_err(StorageError::Io)
}

/// Reads an archived WAL file of cluster `system_identifier` (`None`: the archive's owner)
/// back: a sealed one is opened with its key from `keys` (which authenticates it); a plain one
/// is checked against its sidecar, and refused when `require_sealed` (an encrypted archive,
/// where a plain file can only have been put there by whoever can write to the storage).
pub fn restore_wal(
    storage: &dyn Storage,
    system_identifier: Option<&str>,
    name: &str,
    keys: &KeyDir,
    require_sealed: bool,
) -> Result<Vec<u8>, StorageError> {
    let data = data_object(name);
    let bytes = storage.get(&data)?;
    if sealed_key_id(&bytes).is_some() {
        return decompress(&open(storage, system_identifier, name, keys, bytes)?);
    }
    if require_sealed {
        return Err(StorageError::Io(format!(
            "{} is not encrypted, but the archive is: refused",
            storage.describe(&data)
        )));
    }
    let contents = decompress(&bytes)?;
    let expected = String::from_utf8_lossy(&storage.get(&checksum_object(name))?)
        .trim()
        .to_string();
    if sha256_hex(&contents) != expected {
        return Err(StorageError::Io(format!(
            "archived WAL file {name} does not match its checksum"
        )));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::seal_object;
    use crate::storage::{compress, LocalStorage, Location};

    const SYS: &str = "7311111111111111111";

    #[test]
    fn encrypted_wal_needs_its_key_and_its_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir(&keys_dir).unwrap();
        let key_file = keys_dir.join("k1.key");
        std::fs::write(&key_file, "0f".repeat(32)).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keys = KeyDir(Some(keys_dir));
        let storage = LocalStorage::open(&Location::Local(dir.path().join("wal"))).unwrap();
        let name = "000000010000000000000009";
        let segment = b"a row that must not appear in the archive".repeat(1000);
        archive_wal(&storage, SYS, name, &segment, &keys, Some("k1")).unwrap();
        let stored = storage.get(&data_object(name)).unwrap();
        assert!(
            !stored.windows(9).any(|w| w == b"a row tha"),
            "the plaintext is not stored"
        );
        assert_eq!(
            restore_wal(&storage, Some(SYS), name, &keys, true).unwrap(),
            segment
        );
        let err = restore_wal(&storage, Some(SYS), name, &KeyDir::default(), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("encrypted") && err.contains(&data_object(name)),
            "{err}"
        );
        // no digest of the plaintext is stored beside it; archiving it again is recognised
        assert!(!storage.exists(&checksum_object(name)).unwrap());
        assert_eq!(
            archive_wal(&storage, SYS, name, &segment, &keys, Some("k1")).unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(matches!(
            archive_wal(&storage, SYS, name, b"other", &keys, Some("k1")),
            Err(StorageError::Conflict(_))
        ));
        // another cluster's segment, sealed with the same key under the same name, does not
        // decrypt here; one sealed before WAL was bound to its cluster (name only) still does
        let theirs = "00000001000000000000000D";
        let other_cluster =
            LocalStorage::open(&Location::Local(dir.path().join("theirs"))).unwrap();
        archive_wal(
            &other_cluster,
            "7322222222222222222",
            theirs,
            b"theirs",
            &keys,
            Some("k1"),
        )
        .unwrap();
        storage
            .put_new(
                &data_object(theirs),
                &other_cluster.get(&data_object(theirs)).unwrap(),
            )
            .unwrap();
        let err = restore_wal(&storage, Some(SYS), theirs, &keys, true).unwrap_err();
        assert!(err.to_string().contains(&data_object(theirs)), "{err}");
        let legacy = "00000001000000000000000E";
        let key = keys.load("k1").unwrap();
        let sealed_by_name =
            seal_object(&key, legacy.as_bytes(), &compress(b"old", 3).unwrap()).unwrap();
        storage
            .put_new(&data_object(legacy), &sealed_by_name)
            .unwrap();
        assert_eq!(
            restore_wal(&storage, Some(SYS), legacy, &keys, true).unwrap(),
            b"old"
        );
        // the same bytes under another name do not decrypt
        let other = "00000001000000000000000A";
        storage.put_new(&data_object(other), &stored).unwrap();
        assert!(restore_wal(&storage, Some(SYS), other, &keys, true).is_err());
        // a flipped byte is caught
        let mut bad = stored.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let third = "00000001000000000000000B";
        storage.put_new(&data_object(third), &bad).unwrap();
        assert!(restore_wal(&storage, Some(SYS), third, &keys, true).is_err());
        // a plain segment with a matching sidecar, put there by whoever can write to the
        // archive, is refused where the archive is encrypted
        let planted = "00000001000000000000000C";
        storage
            .put_new(&data_object(planted), &compress(b"forged", 3).unwrap())
            .unwrap();
        storage
            .put_new(
                &checksum_object(planted),
                format!("{}\n", sha256_hex(b"forged")).as_bytes(),
            )
            .unwrap();
        let err = restore_wal(&storage, Some(SYS), planted, &keys, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not encrypted") && err.contains("refused"),
            "{err}"
        );
        assert_eq!(
            restore_wal(&storage, Some(SYS), planted, &keys, false).unwrap(),
            b"forged"
        );
    }

    #[test]
    fn an_archive_belongs_to_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(&Location::Local(dir.path().to_path_buf())).unwrap();
        assert_eq!(archive_owner(&storage).unwrap(), None);
        claim_archive(&storage, "7412").unwrap();
        claim_archive(&storage, "7412").unwrap();
        assert_eq!(archive_owner(&storage).unwrap().as_deref(), Some("7412"));
        let err = claim_archive(&storage, "9999").unwrap_err().to_string();
        assert!(
            err.contains("belongs to cluster 7412") && err.contains("9999"),
            "{err}"
        );
        assert!(!is_wal_file_name(ARCHIVE_MARKER));
    }

    #[test]
    fn wal_names() {
        for ok in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000004.partial",
        ] {
            assert!(is_wal_file_name(ok), "{ok}");
        }
        for bad in [
            "00000001000000000000001",
            "000000010000000000000001.zst",
            "0000000g0000000000000001",
            "../etc/passwd",
            "000000010000000a00000001",
        ] {
            assert!(!is_wal_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn archive_is_idempotent_refuses_conflicts_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(&Location::Local(dir.path().to_path_buf())).unwrap();
        let segment = vec![7u8; 16 * 1024 * 1024];
        let name = "000000010000000000000002";
        assert_eq!(
            archive_wal(&storage, SYS, name, &segment, &KeyDir::default(), None).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            archive_wal(&storage, SYS, name, &segment, &KeyDir::default(), None).unwrap(),
            PutOutcome::AlreadyPresent
        );
        let mut other = segment.clone();
        other[100] = 8;
        assert!(matches!(
            archive_wal(&storage, SYS, name, &other, &KeyDir::default(), None),
            Err(StorageError::Conflict(_))
        ));
        assert_eq!(
            restore_wal(&storage, Some(SYS), name, &KeyDir::default(), false).unwrap(),
            segment
        );
        assert!(
            std::fs::metadata(dir.path().join("000000010000000000000002.zst"))
                .unwrap()
                .len()
                < 100_000
        );
    }

    #[test]
    fn a_crash_between_data_and_checksum_is_repaired_by_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(&Location::Local(dir.path().to_path_buf())).unwrap();
        let name = "000000010000000000000005";
        storage
            .put_new(&data_object(name), &compress(b"segment", 3).unwrap())
            .unwrap();
        assert_eq!(
            archive_wal(&storage, SYS, name, b"segment", &KeyDir::default(), None).unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert_eq!(
            restore_wal(&storage, Some(SYS), name, &KeyDir::default(), false).unwrap(),
            b"segment"
        );
    }
}
