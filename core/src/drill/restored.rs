//! A restored data directory is hostile input: before a drill starts a server on it, what in it
//! could make that server act outside the drill's scratch directory is set aside or refused.

use crate::backup::manifest::Tablespace;
use std::fs;
use std::path::Path;

/// Where the restored postgresql.auto.conf is kept, unread, for whoever looks into a drill.
pub const SET_ASIDE_AUTO_CONF: &str = "postgresql.auto.conf.restored";

/// Makes the restored directory `data` (inside `scratch`) safe to start for a drill:
/// - its postgresql.auto.conf (production's ALTER SYSTEM settings: `external_pid_file`,
///   libraries, archiving, log directories…) is set aside, so the server reads only the
///   settings the drill gives it and the recovery settings written next;
/// - a standby.signal, which would keep the server a standby forever, is removed;
/// - a tablespace_map or a pg_tblspc link that leads outside `scratch` is refused (a restore
///   writes no tablespace_map, and links each tablespace to its place in `scratch`).
pub fn neutralise(data: &Path, scratch: &Path) -> Result<(), String> {
    let auto = data.join("postgresql.auto.conf");
    if auto.exists() {
        fs::rename(&auto, data.join(SET_ASIDE_AUTO_CONF))
            .map_err(|e| format!("cannot set aside \"{}\": {e}", auto.display()))?;
    }
    match fs::remove_file(data.join("standby.signal")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove standby.signal: {e}")),
    }
    if let Ok(map) = fs::read_to_string(data.join("tablespace_map")) {
        for line in map.lines().filter(|l| !l.trim().is_empty()) {
            let path = line.split_once(' ').map_or("", |(_, p)| p);
            if !inside(Path::new(path), scratch) {
                return Err(format!(
                    "the restored tablespace_map names a tablespace outside the drill's directory (\"{line}\"); refused"
                ));
            }
        }
    }
    if let Ok(links) = fs::read_dir(data.join("pg_tblspc")) {
        for link in links.flatten() {
            let target = fs::read_link(link.path()).map_err(|_| {
                format!(
                    "pg_tblspc/{} is not a link",
                    link.file_name().to_string_lossy()
                )
            })?;
            if !inside(&target, scratch) {
                return Err(format!(
                    "pg_tblspc/{} leads outside the drill's directory (\"{}\"); refused",
                    link.file_name().to_string_lossy(),
                    target.display()
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a drill of backup `backup_id` when the live server has a tablespace the backup
/// lacks (`live`: OID and location of each): it was created after the backup started, and
/// replaying its CREATE TABLESPACE links the drill's server to that live location — PostgreSQL
/// replays a tablespace's creation at the location it was created with, which no setting moves.
pub fn check_live_tablespaces(
    backup_id: i64,
    backed_up: &[Tablespace],
    live: &[(String, String)],
) -> Result<(), String> {
    match live
        .iter()
        .find(|(oid, _)| !backed_up.iter().any(|t| t.oid == *oid))
    {
        Some((oid, location)) => Err(format!(
            "tablespace {oid} (\"{location}\") was created after backup {backup_id} started: replaying its creation would make the drill's server write into that live location; take a new backup and drill that one"
        )),
        None => Ok(()),
    }
}

/// Whether `path` is an absolute path under `scratch` that no `..` leads out of.
fn inside(path: &Path, scratch: &Path) -> bool {
    path.starts_with(scratch)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_settings_are_set_aside_and_outside_paths_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let data = scratch.path().join("data");
        fs::create_dir_all(data.join("pg_tblspc")).unwrap();
        fs::write(
            data.join("postgresql.auto.conf"),
            "external_pid_file = '/tmp/owned'\n",
        )
        .unwrap();
        fs::write(data.join("standby.signal"), "").unwrap();
        neutralise(&data, scratch.path()).unwrap();
        assert!(!data.join("postgresql.auto.conf").exists());
        assert!(!data.join("standby.signal").exists());
        assert!(fs::read_to_string(data.join(SET_ASIDE_AUTO_CONF))
            .unwrap()
            .contains("external_pid_file"));

        fs::write(data.join("tablespace_map"), "16384 /srv/elsewhere\n").unwrap();
        let why = neutralise(&data, scratch.path()).unwrap_err();
        assert!(why.contains("/srv/elsewhere"), "{why}");
        fs::write(
            data.join("tablespace_map"),
            format!("16384 {}/ts\n", scratch.path().display()),
        )
        .unwrap();
        neutralise(&data, scratch.path()).unwrap();
        fs::write(
            data.join("tablespace_map"),
            format!("16384 {}/../../etc\n", scratch.path().display()),
        )
        .unwrap();
        assert!(neutralise(&data, scratch.path()).is_err());
        fs::remove_file(data.join("tablespace_map")).unwrap();

        std::os::unix::fs::symlink("/etc", data.join("pg_tblspc/16385")).unwrap();
        let why = neutralise(&data, scratch.path()).unwrap_err();
        assert!(why.contains("pg_tblspc/16385"), "{why}");
    }

    #[test]
    fn a_tablespace_created_after_the_backup_refuses_the_drill() {
        let backed_up = [Tablespace {
            oid: "16400".into(),
            location: "/srv/ts1".into(),
        }];
        let live = |oids: &[&str]| -> Vec<(String, String)> {
            oids.iter()
                .map(|o| (o.to_string(), format!("/srv/{o}")))
                .collect()
        };
        check_live_tablespaces(7, &backed_up, &live(&["16400"])).unwrap();
        check_live_tablespaces(7, &backed_up, &[]).unwrap(); // dropped since: replay drops it
        let why = check_live_tablespaces(7, &backed_up, &live(&["16400", "16500"])).unwrap_err();
        assert!(why.contains("16500") && why.contains("backup 7"), "{why}");
    }
}
