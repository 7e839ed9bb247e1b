//! Whether a server is a copy of the one its schedules were written for. A server restored from
//! a backup (or cloned with pg_dump, or started on a copied data directory) has the original's
//! catalog: its schedules name the original's storage and its retention decides from a snapshot
//! of the past. Until an administrator adopts it, such a copy runs no schedule and no retention.

/// File that `admin-toolkit restore` writes into a restored data directory: its presence holds
/// schedules and retention, whatever else matches.
pub const HELD_MARKER: &str = "admin_toolkit.held";

/// What the server is now, and what its catalog says it was when its schedules were adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub system_identifier: String,
    pub data_directory: String,
}

/// Why schedules and retention are held on this server, or None when it is the one they were
/// written for. `recorded` is None before the first look (nothing to compare: it is recorded).
pub fn held_reason(marker: bool, recorded: Option<&Identity>, now: &Identity) -> Option<String> {
    if marker {
        return Some(format!(
            "this server was restored by admin-toolkit restore ({HELD_MARKER} in its data directory)"
        ));
    }
    let recorded = recorded?;
    if recorded.system_identifier != now.system_identifier {
        return Some(format!(
            "this server is cluster {}, but its schedules were written on cluster {}",
            now.system_identifier, recorded.system_identifier
        ));
    }
    if recorded.data_directory != now.data_directory {
        return Some(format!(
            "this server runs in \"{}\", but its schedules were written on a server in \"{}\"",
            now.data_directory, recorded.data_directory
        ));
    }
    None
}

/// The log line and hint of a held server.
pub fn held_message(reason: &str) -> String {
    format!(
        "{reason}: no schedule runs and no retention deletes anything here until an administrator runs SELECT admin_toolkit.adopt_as_primary()"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(system: &str, dir: &str) -> Identity {
        Identity {
            system_identifier: system.into(),
            data_directory: dir.into(),
        }
    }

    #[test]
    fn copies_are_held_until_adopted() {
        let here = at("7412", "/var/lib/postgresql/15/main");
        assert_eq!(held_reason(false, None, &here), None, "first look");
        assert_eq!(held_reason(false, Some(&here), &here), None);
        let restored = held_reason(true, Some(&here), &here).unwrap();
        assert!(restored.contains("admin-toolkit restore"), "{restored}");
        let moved = held_reason(false, Some(&at("7412", "/srv/old")), &here).unwrap();
        assert!(moved.contains("/srv/old"), "{moved}");
        let other =
            held_reason(false, Some(&at("1", "/var/lib/postgresql/15/main")), &here).unwrap();
        assert!(other.contains("cluster 1"), "{other}");
        assert!(held_message(&other).contains("adopt_as_primary()"));
    }
}
