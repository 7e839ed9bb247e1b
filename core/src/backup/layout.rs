//! What a base backup leaves out of the data directory, following PostgreSQL's documentation
//! ("Making a Base Backup Using the Low Level API") and pg_basebackup: the contents of pg_wal and
//! of the directories rebuilt at startup, the postmaster's files, temporary files and relations,
//! and unlogged relations except their init forks.

/// Directories kept (created empty on restore) but whose contents are left out.
pub const EMPTIED_DIRECTORIES: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files left out wherever they are (pg_internal.init) or at the top level.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "current_logfiles",
];

/// Whether the contents of directory `relative` are left out.
pub fn empties_directory(relative: &str) -> bool {
    EMPTIED_DIRECTORIES.contains(&relative)
}

/// Whether a directory entry named `name` is temporary (pgsql_tmp files and directories).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with("pgsql_tmp")
}

/// The relfilenode a relation file name belongs to (`16384`, `16384.1`, `16384_fsm`), if any.
fn relfilenode(name: &str) -> Option<&str> {
    let end = name.find(['.', '_']).unwrap_or(name.len());
    let node = &name[..end];
    (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some(node)
}

/// A temporary relation file: `t<backend>_<relfilenode>[_fork][.segment]`.
fn is_temporary_relation(name: &str) -> bool {
    name.strip_prefix('t')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(backend, rest)| {
            !backend.is_empty()
                && backend.bytes().all(|b| b.is_ascii_digit())
                && relfilenode(rest).is_some()
        })
}

/// Whether a directory holds relation files: `global`, `base/<database>`, and a database's
/// directory in a tablespace, `pg_tblspc/<oid>/PG_<major>_<catalog version>/<database>`.
fn is_database_directory(directory: &str) -> bool {
    if directory == "global" || directory.starts_with("base/") {
        return true;
    }
    let parts: Vec<&str> = directory.split('/').collect();
    parts.len() == 4 && parts[0] == "pg_tblspc" && parts[2].starts_with("PG_")
}

/// Whether file `name` in directory `directory` (relative, '/'-separated, "" for the top) is
/// left out. `unlogged` lists the relfilenodes of this directory that have an init fork.
pub fn skips_file(directory: &str, name: &str, unlogged: &[String]) -> bool {
    if name == "pg_internal.init" || is_temporary(name) {
        return true;
    }
    if directory.is_empty() && EXCLUDED_FILES.contains(&name) {
        return true;
    }
    if !is_database_directory(directory) {
        return false;
    }
    if is_temporary_relation(name) {
        return true;
    }
    match relfilenode(name) {
        Some(node) => !name.ends_with("_init") && unlogged.iter().any(|u| u == node),
        None => false,
    }
}

/// Whether a file holds relation pages whose LSNs are kept by WAL (main fork and visibility
/// map; not the free space map, which is updated without WAL, nor init forks).
pub fn has_wal_logged_pages(directory: &str, name: &str) -> bool {
    is_database_directory(directory)
        && relfilenode(name).is_some()
        && !name.contains("_fsm")
        && !name.contains("_init")
}

/// The relfilenodes with an init fork (unlogged relations) among a directory's file names.
pub fn unlogged_relations<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .filter_map(|n| n.strip_suffix("_init"))
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_out_what_the_documentation_says() {
        assert!(empties_directory("pg_wal") && empties_directory("pg_replslot"));
        assert!(!empties_directory("base") && !empties_directory("base/pg_wal"));
        assert!(skips_file("", "postmaster.pid", &[]));
        assert!(!skips_file("global", "postmaster.pid", &[]));
        assert!(skips_file("base/5", "pg_internal.init", &[]));
        assert!(skips_file("base/pgsql_tmp", "pgsql_tmp123.0", &[]));
        assert!(skips_file("base/5", "t3_16384", &[]));
        assert!(skips_file("base/5", "t12_16384_fsm.1", &[]));
        assert!(!skips_file("base/5", "16384", &[]));
        assert!(!skips_file("", "postgresql.conf", &[]));
        assert!(!skips_file("pg_xact", "0000", &[]));
        let in_tablespace = "pg_tblspc/16400/PG_15_202209061/5";
        assert!(skips_file(in_tablespace, "t3_16384", &[]));
        assert!(has_wal_logged_pages(in_tablespace, "16384"));
        assert!(!has_wal_logged_pages(in_tablespace, "16384_fsm"));
        assert!(!has_wal_logged_pages(
            "pg_tblspc/16400/PG_15_202209061",
            "16384"
        ));
        assert!(skips_file(in_tablespace, "16384", &["16384".into()]));
    }

    #[test]
    fn unlogged_relations_keep_only_their_init_fork() {
        let names = [
            "16384",
            "16384_init",
            "16384_fsm",
            "16384.1",
            "16390",
            "16390_vm",
        ];
        let unlogged = unlogged_relations(names.iter().copied());
        assert_eq!(unlogged, vec!["16384".to_string()]);
        assert!(skips_file("base/5", "16384", &unlogged));
        assert!(skips_file("base/5", "16384.1", &unlogged));
        assert!(skips_file("base/5", "16384_fsm", &unlogged));
        assert!(!skips_file("base/5", "16384_init", &unlogged));
        assert!(!skips_file("base/5", "16390", &unlogged));
    }
}
