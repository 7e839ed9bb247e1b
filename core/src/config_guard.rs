//! Configuration changes that switch off admin_toolkit's own protections: removing it from
//! shared_preload_libraries (no hooks, no worker after the next restart) or turning an audit or
//! password-policy setting off. Such changes are for superusers only, and are recorded.

/// The library name as it appears in shared_preload_libraries.
pub const LIBRARY: &str = "admin_toolkit";

/// The elements of a list setting's value (`shared_preload_libraries`, `search_path`, …) as
/// PostgreSQL splits it: separated by commas, surrounding spaces dropped, an element in double
/// quotes taken as written (`""` is one quote, a comma inside is kept).
pub fn list_elements(list: &str) -> Vec<String> {
    let mut elements = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut element = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                if c == '"' && chars.next_if_eq(&'"').is_none() {
                    break;
                }
                element.push(c);
            }
            while chars.next_if(|c| *c != ',').is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                element.push(c);
            }
            element = element.trim_end().to_string();
        }
        if !element.is_empty() {
            elements.push(element);
        }
        if chars.next().is_none() {
            return elements;
        }
    }
}

/// The names in a library list such as `'pg_stat_statements, "admin_toolkit"'` (commas,
/// optional double quotes, surrounding spaces), as PostgreSQL splits it.
pub fn library_names(list: &str) -> Vec<String> {
    list_elements(list)
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(|item| {
            // `$libdir/admin_toolkit` and `admin_toolkit.so` name the same library.
            let base = item.rsplit('/').next().unwrap_or(item);
            base.strip_suffix(".so").unwrap_or(base).to_string()
        })
        .collect()
}

/// PostgreSQL's boolean spellings (a unique prefix of true/false/yes/no, on/off, 1/0);
/// `None` when the text is not a boolean.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    let prefix_of = |word: &str| word.starts_with(v.as_str());
    match v.as_str() {
        "on" | "1" => Some(true),
        "off" | "of" | "0" => Some(false),
        "o" => None,
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// The settings whose `off` switches off a protection, with what is lost.
const SWITCHES: [(&str, &str); 4] = [
    (
        "admin_toolkit.audit_ddl",
        "DDL, GRANT/REVOKE, role changes and ALTER SYSTEM are no longer audited",
    ),
    (
        "admin_toolkit.audit_logins",
        "login attempts are no longer audited, so failed-login detection goes blind",
    ),
    (
        "admin_toolkit.audit_reads",
        "table reads are no longer counted in the audit log",
    ),
    (
        "admin_toolkit.password_policy",
        "new passwords are no longer checked against the password policy",
    ),
];

/// What is lost if setting `name` changes from `current` to `new`; `None` when nothing is.
pub fn weakening(name: &str, current: &str, new: &str) -> Option<String> {
    let name = name.trim().to_ascii_lowercase();
    if name == "shared_preload_libraries" {
        let had = library_names(current).iter().any(|l| l == LIBRARY);
        let keeps = library_names(new).iter().any(|l| l == LIBRARY);
        return (had && !keeps).then(|| {
            "removing admin_toolkit from shared_preload_libraries switches off, at the next restart, \
             the audit hooks, the password policy and the background worker (metrics, alerts, \
             schedules, retention)"
                .to_string()
        });
    }
    let (_, lost) = SWITCHES.iter().find(|(setting, _)| *setting == name)?;
    (parse_bool(current) != Some(false) && parse_bool(new) == Some(false))
        .then(|| format!("setting {name} to off: {lost}"))
}

/// Why setting `name` to `new` would stop WAL archiving because the other archiver setting is
/// set too (`archive_command` beside `archive_library`): PostgreSQL 16 and later refuse to
/// archive at all with both, 15 silently ignores archive_command. `None` when it would not.
pub fn archiver_conflict(
    name: &str,
    new: &str,
    archive_command: &str,
    archive_library: &str,
) -> Option<String> {
    let (other, other_value) = match name.trim().to_ascii_lowercase().as_str() {
        "archive_command" => ("archive_library", archive_library),
        "archive_library" => ("archive_command", archive_command),
        _ => return None,
    };
    // PostgreSQL's own test: any non-empty value counts, blanks included.
    (!new.is_empty() && !other_value.is_empty()).then(|| {
        format!(
            "{other} is set ('{other_value}'): with both archive_command and archive_library set, \
             PostgreSQL 16 and later stop archiving and 15 ignores archive_command"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_archiver_at_a_time() {
        assert!(archiver_conflict("archive_command", "/bin/true", "", "admin_toolkit").is_some());
        assert!(archiver_conflict("ARCHIVE_LIBRARY", "x", "cp %p /a/%f", "").is_some());
        assert!(archiver_conflict("archive_command", "", "", "admin_toolkit").is_none());
        assert!(archiver_conflict("archive_command", "/bin/true", "", "").is_none());
        assert!(archiver_conflict("archive_command", " ", "", "admin_toolkit").is_some());
        assert!(archiver_conflict("work_mem", "8MB", "a", "b").is_none());
    }

    #[test]
    fn library_lists_are_split_as_postgresql_does() {
        assert_eq!(
            library_names(r#" pg_stat_statements ,"admin_toolkit", $libdir/auto_explain.so"#),
            vec!["pg_stat_statements", "admin_toolkit", "auto_explain"]
        );
        assert!(library_names("").is_empty());
        assert_eq!(
            list_elements(r#"admin_toolkit,pg_stat_statements"#),
            ["admin_toolkit", "pg_stat_statements"]
        );
        assert_eq!(
            list_elements(r#" "$user" , public,"a,""b""" "#),
            ["$user", "public", r#"a,"b""#]
        );
        assert!(list_elements(" , ").is_empty());
    }

    #[test]
    fn removing_the_library_or_switching_audit_off_is_a_weakening() {
        assert!(weakening("shared_preload_libraries", "admin_toolkit", "").is_some());
        assert!(weakening(
            "shared_preload_libraries",
            "pg_stat_statements,admin_toolkit",
            "pg_stat_statements"
        )
        .is_some());
        assert!(weakening(
            "shared_preload_libraries",
            "admin_toolkit",
            "admin_toolkit, x"
        )
        .is_none());
        assert!(weakening("shared_preload_libraries", "", "").is_none());
        assert!(weakening("admin_toolkit.audit_ddl", "on", "off").is_some());
        assert!(weakening("ADMIN_TOOLKIT.AUDIT_LOGINS", "on", "f").is_some());
        assert!(weakening("admin_toolkit.audit_reads", "on", "no").is_some());
        assert!(weakening("admin_toolkit.password_policy", "on", "0").is_some());
        assert!(weakening("admin_toolkit.audit_ddl", "off", "off").is_none());
        assert!(weakening("admin_toolkit.audit_ddl", "off", "on").is_none());
        assert!(weakening("work_mem", "4MB", "0").is_none());
    }

    #[test]
    fn booleans() {
        for t in ["on", "ON", "true", "t", "yes", "y", "1", "tr"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["off", "of", "false", "f", "no", "n", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["o", "", "2", "maybe"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
    }
}
