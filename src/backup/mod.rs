//! Backups: the WAL archive module (base backups, retention and verification join here as they
//! land).

pub mod archive;
