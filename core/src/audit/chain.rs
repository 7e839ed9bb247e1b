//! The audit log's hash chain: each row's hash covers the hash of the row before it and the
//! row's canonical text (the SQL function `audit_row_text`), so that altering, removing or
//! inserting a row breaks every link after it. verify_audit_log() recomputes it in SQL as
//! `sha256(previous_hash || convert_to(audit_row_text(row), 'UTF8'))`.

use sha2::{Digest, Sha256};

/// The hash of a row whose predecessor's hash is `previous` (empty for the first row).
pub fn link(previous: &[u8], canonical_text: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical_text);
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_first_link_is_the_sha256_of_the_text() {
        // sha256('abc'), as PostgreSQL's sha256('\x'::bytea || 'abc'::bytea) gives it.
        assert_eq!(
            hex(&link(b"", b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn each_link_depends_on_the_one_before() {
        let first = link(b"", b"'1','a'");
        let second = link(&first, b"'2','b'");
        assert_ne!(second, link(b"", b"'2','b'"));
        assert_ne!(second, link(&link(b"", b"'1','A'"), b"'2','b'"));
        assert_eq!(second, link(&first, b"'2','b'"));
    }
}
