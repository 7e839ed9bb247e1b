//! The checks a drill runs on its restored server. That server is a byte copy of production:
//! its catalogs, database and role settings and event triggers are whatever production's roles
//! made them. So every statement here qualifies each function, operator and type; each session
//! pins its settings in its startup packet (which outranks `ALTER DATABASE/ROLE … SET`, and
//! those are deleted from the copy anyway); the restored event triggers are disabled before
//! anything is created; amcheck is reached through a function of the session's own (never
//! through a catalog's `bt_index_check`, which a schema owner could have replaced); and rows are
//! counted by each table's owner, logging in to the copy: planning a count can run code the
//! owner put in the table's index expressions or statistics, and that code then runs with no
//! more rights than its owner has in production.
//!
//! Output lines, fields separated by a unit separator (0x1f): `i` index, amcheck's error or
//! empty; `t` table, rows; `s` object, why it was skipped; `u` table, why it cannot be read.
//! Names of databases and roles are read hex-encoded (a name may hold a line break).

/// Separator of the fields of an output line (psql `-F`).
pub const FIELD_SEPARATOR: char = '\u{1f}';

/// Settings of every session the drill opens, for its startup packet (`options`): they outrank
/// the restored database and role settings. The superuser's sessions also pin what only a
/// superuser may set; a server of `major` 17 or later also has transaction_timeout.
pub fn session_options(superuser: bool, major: u32) -> String {
    let mut options = vec![
        "search_path=pg_catalog,pg_temp",
        "role=none",
        "default_transaction_read_only=off",
        "statement_timeout=0",
        "lock_timeout=0",
        "idle_in_transaction_session_timeout=0",
        "idle_session_timeout=0",
        "transform_null_equals=off",
        "quote_all_identifiers=off",
        "standard_conforming_strings=on",
        "check_function_bodies=on",
        "row_security=on",
        "DateStyle=ISO",
        "client_min_messages=warning",
        "local_preload_libraries=",
        "temp_tablespaces=",
        "default_tablespace=",
        "jit=off",
        "plpgsql.extra_errors=none",
        "plpgsql.extra_warnings=none",
        "plpgsql.variable_conflict=error",
        "exit_on_error=off",
        "client_encoding=UTF8",
    ];
    if major >= 17 {
        options.push("transaction_timeout=0");
    }
    if superuser {
        options.extend([
            "session_preload_libraries=",
            "session_replication_role=origin",
            "lc_messages=C",
        ]);
    }
    options
        .iter()
        .map(|o| format!("-c {o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// First command in each restored database, as superuser: its event triggers disabled, so
/// that nothing the drill creates fires them (the copy is the drill's to change).
pub const DISABLE_EVENT_TRIGGERS: &str = "UPDATE pg_catalog.pg_event_trigger SET evtenabled = 'D' \
 WHERE evtenabled OPERATOR(pg_catalog.<>) 'D'";

/// Run once in template1 as superuser after [`DISABLE_EVENT_TRIGGERS`]: no restored database
/// or role setting applies to the drill's sessions, and every table owner may log in to every
/// database (whatever CONNECT, TEMPORARY, connection limits or NOLOGIN production has), to count
/// its own tables.
pub const PREPARE_CLUSTER: &str = "DELETE FROM pg_catalog.pg_db_role_setting; \
UPDATE pg_catalog.pg_authid SET rolcanlogin = true, rolconnlimit = -1 \
 WHERE oid OPERATOR(pg_catalog.>=) 16384; \
UPDATE pg_catalog.pg_database SET datacl = NULL, datconnlimit = -1";

/// Run in each database as superuser after [`DISABLE_EVENT_TRIGGERS`]: an owner counting its
/// own table sees every row (FORCE ROW LEVEL SECURITY lifted in the copy).
pub const LIFT_FORCED_ROW_SECURITY: &str =
    "UPDATE pg_catalog.pg_class SET relforcerowsecurity = false WHERE relforcerowsecurity";

/// The connectable databases, hex-encoded, one per line.
pub const DATABASES_SQL: &str =
    "SELECT pg_catalog.encode(pg_catalog.convert_to(datname::pg_catalog.text, 'UTF8'), 'hex') \
  FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1";

/// The roles that own a table to count in this database, hex-encoded, one per line.
pub fn owners_sql() -> String {
    format!(
        "SELECT DISTINCT pg_catalog.encode(pg_catalog.convert_to(r.rolname::pg_catalog.text, 'UTF8'), 'hex') \
           FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner \
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
          WHERE {COUNTED} ORDER BY 1"
    )
}

/// Which relations are counted: permanent tables and materialized views outside the system
/// schemas.
const COUNTED: &str = "c.relkind OPERATOR(pg_catalog.=) ANY ('{r,m}'::pg_catalog.\"char\"[]) \
   AND c.relpersistence OPERATOR(pg_catalog.=) 'p' \
   AND n.nspname OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema}'::pg_catalog.name[]) \
   AND NOT pg_catalog.starts_with(n.nspname::pg_catalog.text, 'pg_toast')";

/// A name from [`DATABASES_SQL`] or [`owners_sql`] (hex of its UTF-8 bytes).
pub fn decode_name(hex: &str) -> Result<String, String> {
    let hex = hex.trim();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|_| hex.len().is_multiple_of(2))
        .ok_or_else(|| format!("unreadable name \"{hex}\""))?;
    String::from_utf8(bytes).map_err(|_| format!("name \"{hex}\" is not UTF-8"))
}

/// A name or message on one output line: no line break, no field separator.
const ONE_LINE: &str = "pg_catalog.translate(%s, pg_catalog.chr(10) OPERATOR(pg_catalog.||) pg_catalog.chr(13) OPERATOR(pg_catalog.||) pg_catalog.chr(31), '   ')";

fn one_line(expression: &str) -> String {
    ONE_LINE.replace("%s", expression)
}

/// The index checks, as superuser in each database after [`DISABLE_EVENT_TRIGGERS`]: amcheck's
/// `bt_index_check` on every valid B-tree index (catalogs' included), through a function of
/// this session's own; an error of one index never stops the others.
pub fn index_check_sql() -> String {
    format!(
        r#"CREATE FUNCTION pg_temp.admin_toolkit_bt_index_check(pg_catalog.regclass) RETURNS pg_catalog.void
LANGUAGE c STRICT AS '$libdir/amcheck', 'bt_index_check';
CREATE FUNCTION pg_temp.admin_toolkit_index_check(idx pg_catalog.regclass) RETURNS pg_catalog.text
LANGUAGE plpgsql SET search_path TO pg_catalog, pg_temp AS $f$
BEGIN
    PERFORM pg_temp.admin_toolkit_bt_index_check(idx);
    RETURN '';
EXCEPTION WHEN OTHERS THEN
    RETURN {message};
END
$f$;
SELECT 'i', {name}, pg_temp.admin_toolkit_index_check(c.oid::pg_catalog.regclass)
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
  JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam
 WHERE a.amname OPERATOR(pg_catalog.=) 'btree' AND i.indisvalid AND i.indisready
   AND c.relkind OPERATOR(pg_catalog.=) 'i' AND c.relpersistence OPERATOR(pg_catalog.<>) 't'
 ORDER BY 2"#,
        message = one_line("SQLERRM"),
        name = one_line("c.oid::pg_catalog.regclass::pg_catalog.text"),
    )
}

/// The row counts, as the owner of the tables counted, in each database: every permanent
/// table and materialized view the session's role owns is counted (`ONLY`: inheritance
/// children, foreign ones included, are counted as themselves); an unpopulated materialized
/// view, or an object the role may not read, is skipped with the reason; a table whose files
/// cannot be read (SQLSTATE classes XX and 58: corrupted data, missing or unreadable files) is
/// reported unreadable.
pub fn count_sql() -> String {
    format!(
        r#"CREATE FUNCTION pg_temp.admin_toolkit_row_count(tbl pg_catalog.regclass, OUT kind pg_catalog.text, OUT value pg_catalog.text)
LANGUAGE plpgsql SET search_path TO pg_catalog, pg_temp AS $f$
DECLARE n pg_catalog.int8;
BEGIN
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM ONLY %s', tbl) INTO n;
    kind := 't';
    value := n::pg_catalog.text;
EXCEPTION WHEN OTHERS THEN
    kind := CASE WHEN pg_catalog.left(SQLSTATE, 2) OPERATOR(pg_catalog.=) ANY ('{{XX,58}}'::pg_catalog.text[])
                 THEN 'u' ELSE 's' END;
    value := {message};
END
$f$;
SELECT r.kind, {name}, r.value
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  CROSS JOIN LATERAL (
      SELECT 's' AS kind, 'materialized view not populated (WITH NO DATA)' AS value
       WHERE NOT c.relispopulated
      UNION ALL
      SELECT f.kind, f.value FROM pg_temp.admin_toolkit_row_count(c.oid::pg_catalog.regclass) f
       WHERE c.relispopulated) r
 WHERE {counted}
   AND c.relowner OPERATOR(pg_catalog.=) (SELECT a.oid FROM pg_catalog.pg_roles a
                                           WHERE a.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
 ORDER BY 2"#,
        message = one_line("SQLERRM"),
        name = one_line("c.oid::pg_catalog.regclass::pg_catalog.text"),
        counted = COUNTED,
    )
}

/// What the checks found in one database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseChecks {
    pub database: String,
    pub indexes_checked: u64,
    /// (index, amcheck's error) for every index amcheck rejected.
    pub index_failures: Vec<(String, String)>,
    /// (table, rows) for every table counted.
    pub row_counts: Vec<(String, i64)>,
    /// (object, why) for every object not counted that says nothing about the restore.
    pub skipped: Vec<(String, String)>,
    /// (table, error) for every table whose data could not be read.
    pub unreadable: Vec<(String, String)>,
}

/// Reads the output of [`index_check_sql`] and [`count_sql`] (psql -At, fields separated by
/// [`FIELD_SEPARATOR`]) into `checks`.
pub fn parse_checks(checks: &mut DatabaseChecks, output: &str) -> Result<(), String> {
    for line in output.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(FIELD_SEPARATOR).collect();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        match fields.as_slice() {
            ["i", index, error] => {
                checks.indexes_checked += 1;
                if !error.is_empty() {
                    checks.index_failures.push(pair(index, error));
                }
            }
            ["t", table, rows] => checks.row_counts.push((
                table.to_string(),
                rows.parse()
                    .map_err(|_| format!("unreadable row count in \"{line}\""))?,
            )),
            ["s", object, why] => checks.skipped.push(pair(object, why)),
            ["u", table, error] => checks.unreadable.push(pair(table, error)),
            _ => return Err(format!("unreadable check output line \"{line}\"")),
        }
    }
    Ok(())
}

/// Why a drill whose checks ran failed, or None when every check passed: amcheck's rejections
/// and tables that could not be read; skipped objects are not failures.
pub fn check_failure(checks: &[DatabaseChecks]) -> Option<String> {
    let failures: Vec<String> = checks
        .iter()
        .flat_map(|d| {
            let rejected = d.index_failures.iter().map(move |(index, error)| {
                format!(
                    "amcheck rejected index {index} in database \"{}\": {error}",
                    d.database
                )
            });
            let unreadable = d.unreadable.iter().map(move |(table, error)| {
                format!(
                    "table {table} in database \"{}\" cannot be read: {error}",
                    d.database
                )
            });
            rejected.chain(unreadable)
        })
        .collect();
    (!failures.is_empty()).then(|| failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(out: &str) -> DatabaseChecks {
        let mut c = DatabaseChecks {
            database: "app".into(),
            ..DatabaseChecks::default()
        };
        parse_checks(&mut c, out).unwrap();
        c
    }

    #[test]
    fn check_output_is_read_and_failures_named() {
        let c = parsed(
            "i\u{1f}public.t_pkey\u{1f}\ni\u{1f}public.t_v_idx\u{1f}item order invariant violated for index \"t_v_idx\"\n\
             t\u{1f}public.t\u{1f}1000\nt\u{1f}public.\"Odd\"\u{1f}0\n\
             s\u{1f}public.mv\u{1f}materialized view not populated (WITH NO DATA)\n",
        );
        assert_eq!(c.indexes_checked, 2);
        assert_eq!(
            c.row_counts,
            vec![("public.t".into(), 1000), ("public.\"Odd\"".into(), 0)]
        );
        assert_eq!(c.skipped.len(), 1);
        let why = check_failure(&[c]).unwrap();
        assert_eq!(
            why,
            "amcheck rejected index public.t_v_idx in database \"app\": item order invariant violated for index \"t_v_idx\""
        );
        let mut bad = DatabaseChecks::default();
        assert!(parse_checks(&mut bad, "x\u{1f}y\n").is_err());
        assert!(parse_checks(&mut bad, "t\u{1f}y\u{1f}many\n").is_err());
    }

    #[test]
    fn skipped_objects_pass_and_unreadable_tables_fail() {
        let skipped = parsed("i\u{1f}a\u{1f}\ns\u{1f}public.secret\u{1f}permission denied\n");
        assert!(check_failure(&[skipped]).is_none());
        let unreadable =
            parsed("u\u{1f}public.t\u{1f}could not open file \"base/5/16384\": No such file\n");
        assert_eq!(
            check_failure(&[unreadable]).unwrap(),
            "table public.t in database \"app\" cannot be read: could not open file \"base/5/16384\": No such file"
        );
    }

    #[test]
    fn every_function_and_operator_of_the_checks_is_qualified() {
        for sql in [
            index_check_sql(),
            count_sql(),
            DISABLE_EVENT_TRIGGERS.to_string(),
        ] {
            // Operators only through OPERATOR(pg_catalog.x); no bare comparison or concatenation.
            let bare = sql
                .replace("OPERATOR(pg_catalog.=)", "")
                .replace("OPERATOR(pg_catalog.<>)", "")
                .replace("OPERATOR(pg_catalog.||)", "")
                .replace(":=", "")
                .replace("SET evtenabled = 'D'", "");
            for op in [" = ", " <> ", " || ", " LIKE ", " IN ("] {
                assert!(!bare.contains(op), "bare {op:?} in {sql}");
            }
            for call in [
                "format(",
                "count(",
                "left(",
                "translate(",
                "chr(",
                "starts_with(",
            ] {
                for (at, _) in sql.match_indices(call) {
                    let before = &sql[..at];
                    assert!(
                        before.ends_with("pg_catalog.") || before.ends_with('_'),
                        "{call} unqualified in {sql}"
                    );
                }
            }
        }
        assert!(owners_sql().contains("OPERATOR(pg_catalog.=) c.relowner"));
        assert_eq!(
            decode_name("610a62\n").unwrap(),
            "a\nb",
            "a name with a line break"
        );
        assert!(
            decode_name("6").is_err() && decode_name("zz").is_err() && decode_name("ff").is_err()
        );
    }

    #[test]
    fn sessions_pin_their_settings_above_the_restored_ones() {
        let reader = session_options(false, 15);
        assert!(reader.contains("-c search_path=pg_catalog,pg_temp"));
        assert!(reader.contains("-c default_transaction_read_only=off"));
        assert!(
            !reader.contains("session_preload_libraries"),
            "superuser only"
        );
        let superuser = session_options(true, 15);
        assert!(superuser.contains("-c session_preload_libraries= "));
        assert!(
            reader.contains("-c exit_on_error=off") && reader.contains("-c client_encoding=UTF8")
        );
        // PostgreSQL 15 and 16 do not know transaction_timeout (a session naming it fails).
        assert!(!reader.contains("transaction_timeout"));
        assert!(session_options(false, 17).contains("-c transaction_timeout=0"));
        assert!(session_options(true, 18).contains("-c transaction_timeout=0"));
    }
}
