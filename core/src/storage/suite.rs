//! The one test suite every [`Storage`] implementation passes: the local directory in the unit
//! tests, an S3-compatible server in the integration tests. Panics on the first failure.

use super::{PutOutcome, Storage, StorageError};

/// Exercises `storage`, which must be empty, and leaves it empty.
pub fn run(storage: &dyn Storage) {
    assert!(
        storage.list("").unwrap().is_empty(),
        "the storage under test must start empty"
    );

    // create-if-absent: identical is fine, different is refused, the first stays
    assert_eq!(
        storage
            .put_new("wal/000000010000000000000001", b"segment")
            .unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        storage
            .put_new("wal/000000010000000000000001", b"segment")
            .unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert!(matches!(
        storage.put_new("wal/000000010000000000000001", b"other"),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        storage.get("wal/000000010000000000000001").unwrap(),
        b"segment"
    );
    assert!(storage.exists("wal/000000010000000000000001").unwrap());
    assert!(!storage.exists("wal/000000010000000000000002").unwrap());
    assert!(matches!(
        storage.get("wal/missing"),
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(storage.put_new("empty", b"").unwrap(), PutOutcome::Stored);
    assert_eq!(storage.get("empty").unwrap(), b"");

    // ranged reads
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        storage.put_new("b1/data.pack", &body).unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        storage.get_range("b1/data.pack", 0, 10).unwrap(),
        &body[..10]
    );
    assert_eq!(
        storage.get_range("b1/data.pack", 123_456, 7).unwrap(),
        &body[123_456..123_463]
    );
    assert_eq!(
        storage.get_range("b1/data.pack", 199_990, 10).unwrap(),
        &body[199_990..]
    );

    // streaming writes: nothing visible before finish; an abandoned one leaves nothing
    let mut writer = storage.writer("b2/data.pack").unwrap();
    let part: Vec<u8> = (0..1_000_003u32).map(|i| (i % 253) as u8).collect();
    for _ in 0..13 {
        writer.write(&part).unwrap();
    }
    assert!(
        !storage.exists("b2/data.pack").unwrap(),
        "visible before finish"
    );
    assert_eq!(writer.finish().unwrap(), 13 * part.len() as u64);
    let stored = storage.get("b2/data.pack").unwrap();
    assert_eq!(stored.len(), 13 * part.len());
    assert!(stored.chunks(part.len()).all(|c| c == part.as_slice()));
    assert_eq!(
        storage
            .get_range("b2/data.pack", 5 * part.len() as u64 + 17, 3)
            .unwrap(),
        &part[17..20]
    );
    let mut abandoned = storage.writer("b3/data.pack").unwrap();
    abandoned.write(&part).unwrap();
    abandoned.write(&part).unwrap();
    drop(abandoned);
    assert!(!storage.exists("b3/data.pack").unwrap());
    let mut small = storage.writer("b3/manifest").unwrap();
    small.write(b"{}").unwrap();
    assert_eq!(small.finish().unwrap(), 2);

    // listing: by prefix, at any depth, sorted, with sizes and times
    let all: Vec<String> = storage
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(
        all,
        [
            "b1/data.pack",
            "b2/data.pack",
            "b3/manifest",
            "empty",
            "wal/000000010000000000000001"
        ]
    );
    let b1 = storage.list("b1/").unwrap();
    assert_eq!(b1.len(), 1);
    assert_eq!(b1[0].size, body.len() as u64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let modified = b1[0].modified_micros / 1_000_000;
    assert!(
        (modified - now).abs() < 300,
        "modified {modified} vs now {now}"
    );
    assert_eq!(storage.list("wal/0000").unwrap().len(), 1);
    assert!(storage.list("nothing/").unwrap().is_empty());

    // names are plain and relative
    for bad in ["../x", "/x", "a//b", "a/./b", ""] {
        assert!(storage.put_new(bad, b"x").is_err(), "{bad:?}");
    }

    // delete: missing is fine; everything goes
    storage.delete("b2/missing").unwrap();
    for o in storage.list("").unwrap() {
        storage.delete(&o.name).unwrap();
    }
    assert!(storage.list("").unwrap().is_empty());
    assert!(!storage.exists("b1/data.pack").unwrap());
}
