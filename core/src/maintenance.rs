//! Maintenance commands: what a `maintenance_schedules` row runs, built with every identifier
//! quoted, so a target such as `t; DROP TABLE x` is a (missing) table name, never SQL.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceType {
    Vacuum,
    Analyze,
    Reindex,
    /// ANALYZE of the tables whose statistics are stale (never `pg_stat_reset()`).
    StatsUpdate,
}

impl MaintenanceType {
    pub fn parse(s: &str) -> Result<MaintenanceType, MaintenanceError> {
        Ok(match s {
            "vacuum" => MaintenanceType::Vacuum,
            "analyze" => MaintenanceType::Analyze,
            "reindex" => MaintenanceType::Reindex,
            "stats_update" => MaintenanceType::StatsUpdate,
            other => {
                return Err(MaintenanceError(format!(
                    "unknown maintenance_type \"{other}\" (use vacuum, analyze, reindex or stats_update)"
                )))
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceError(pub String);

impl fmt::Display for MaintenanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MaintenanceError {}

/// The options `maintenance_options` may hold; other keys are reported and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceOptions {
    pub analyze: bool,
    pub freeze: bool,
    pub concurrent: bool,
    pub lock_timeout: Option<String>,
    pub statement_timeout: Option<String>,
}

/// A duration as PostgreSQL's timeout settings accept it: digits with an optional unit.
pub fn valid_timeout(value: &str) -> bool {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &value[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "" | "us" | "ms" | "s" | "min" | "h" | "d")
}

/// `"name"` with embedded quotes doubled: always quoted, so no identifier is read as SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// What a schedule targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Database(String),
    /// A schema, with the tables it holds now (for VACUUM / ANALYZE, which take table lists).
    Schema {
        schema: String,
        tables: Vec<String>,
    },
    Table {
        schema: String,
        table: String,
    },
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Database(_) => "database".into(),
            Target::Schema { schema, .. } => schema.clone(),
            Target::Table { schema, table } => format!("{schema}.{table}"),
        }
    }
}

/// The statement to run, or `None` when there is nothing to do (an empty schema, no stale
/// statistics). `stale` lists the (schema, table) pairs a stats_update analyzes.
pub fn build_command(
    kind: MaintenanceType,
    target: &Target,
    options: &MaintenanceOptions,
    stale: &[(String, String)],
) -> Option<String> {
    let table_list = |tables: &[String], schema: &str| {
        tables
            .iter()
            .map(|t| qualified(schema, t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        MaintenanceType::Vacuum | MaintenanceType::Analyze => {
            let mut flags = Vec::new();
            let verb = if kind == MaintenanceType::Vacuum {
                if options.analyze {
                    flags.push("ANALYZE");
                }
                if options.freeze {
                    flags.push("FREEZE");
                }
                "VACUUM"
            } else {
                "ANALYZE"
            };
            let head = if flags.is_empty() {
                verb.to_string()
            } else {
                format!("{verb} ({})", flags.join(", "))
            };
            match target {
                Target::Database(_) => Some(head),
                Target::Schema { tables, .. } if tables.is_empty() => None,
                Target::Schema { schema, tables } => {
                    Some(format!("{head} {}", table_list(tables, schema)))
                }
                Target::Table { schema, table } => {
                    Some(format!("{head} {}", qualified(schema, table)))
                }
            }
        }
        MaintenanceType::Reindex => {
            let concurrently = if options.concurrent {
                " CONCURRENTLY"
            } else {
                ""
            };
            Some(match target {
                Target::Database(db) => {
                    format!("REINDEX DATABASE{concurrently} {}", quote_ident(db))
                }
                Target::Schema { schema, .. } => {
                    format!("REINDEX SCHEMA{concurrently} {}", quote_ident(schema))
                }
                Target::Table { schema, table } => {
                    format!("REINDEX TABLE{concurrently} {}", qualified(schema, table))
                }
            })
        }
        MaintenanceType::StatsUpdate => {
            if stale.is_empty() {
                return None;
            }
            let list = stale
                .iter()
                .map(|(s, t)| qualified(s, t))
                .collect::<Vec<_>>()
                .join(", ");
            Some(format!("ANALYZE {list}"))
        }
    }
}

/// Whether a command must not be waited for from inside a transaction: REINDEX CONCURRENTLY
/// waits for every older snapshot, including the waiting caller's.
pub fn waits_for_older_snapshots(kind: MaintenanceType, options: &MaintenanceOptions) -> bool {
    kind == MaintenanceType::Reindex && options.concurrent
}

/// Whether a warning from VACUUM, ANALYZE or CLUSTER says a relation was skipped because the
/// role may not maintain it: PostgreSQL 15 words it `skipping "t" --- only table or database
/// owner can vacuum it` (or `--- only superuser ...`), 16 and later `permission denied to vacuum
/// "t", skipping it`. Not `skipping "v" --- cannot vacuum non-tables ...`: no right is missing.
pub fn is_permission_skip(warning: &str) -> bool {
    (warning.starts_with("skipping \"") && warning.contains("\" --- only "))
        || (warning.starts_with("permission denied to ") && warning.ends_with("skipping it"))
}

/// The run's error when relations it names were skipped for want of rights (the warnings
/// [`is_permission_skip`] recognises), `None` when none were.
pub fn permission_skip_error<'a>(warnings: impl IntoIterator<Item = &'a String>) -> Option<String> {
    let skipped: Vec<&str> = warnings
        .into_iter()
        .map(String::as_str)
        .filter(|w| is_permission_skip(w))
        .collect();
    if skipped.is_empty() {
        return None;
    }
    let joined = skipped.join("; ");
    Some(if joined.starts_with("permission denied") {
        joined
    } else {
        format!("permission denied: {joined}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str, t: &str) -> Target {
        Target::Table {
            schema: s.into(),
            table: t.into(),
        }
    }

    #[test]
    fn vacuum_and_analyze() {
        let opts = MaintenanceOptions {
            analyze: true,
            freeze: true,
            ..Default::default()
        };
        assert_eq!(
            build_command(
                MaintenanceType::Vacuum,
                &table("public", "large_table"),
                &opts,
                &[]
            )
            .unwrap(),
            "VACUUM (ANALYZE, FREEZE) \"public\".\"large_table\""
        );
        assert_eq!(
            build_command(
                MaintenanceType::Vacuum,
                &Target::Database("db".into()),
                &MaintenanceOptions::default(),
                &[]
            )
            .unwrap(),
            "VACUUM"
        );
        let schema = Target::Schema {
            schema: "s".into(),
            tables: vec!["a".into(), "B".into()],
        };
        assert_eq!(
            build_command(MaintenanceType::Analyze, &schema, &opts, &[]).unwrap(),
            "ANALYZE \"s\".\"a\", \"s\".\"B\""
        );
        let empty = Target::Schema {
            schema: "s".into(),
            tables: vec![],
        };
        assert_eq!(
            build_command(MaintenanceType::Analyze, &empty, &opts, &[]),
            None
        );
    }

    #[test]
    fn reindex() {
        let concurrent = MaintenanceOptions {
            concurrent: true,
            ..Default::default()
        };
        assert_eq!(
            build_command(
                MaintenanceType::Reindex,
                &table("public", "t"),
                &concurrent,
                &[]
            )
            .unwrap(),
            "REINDEX TABLE CONCURRENTLY \"public\".\"t\""
        );
        assert_eq!(
            build_command(
                MaintenanceType::Reindex,
                &Target::Database("my db".into()),
                &Default::default(),
                &[]
            )
            .unwrap(),
            "REINDEX DATABASE \"my db\""
        );
        assert!(waits_for_older_snapshots(
            MaintenanceType::Reindex,
            &concurrent
        ));
        assert!(!waits_for_older_snapshots(
            MaintenanceType::Vacuum,
            &concurrent
        ));
    }

    #[test]
    fn injection_stays_a_name() {
        assert_eq!(
            build_command(
                MaintenanceType::Analyze,
                &table("public", "t; DROP TABLE x"),
                &Default::default(),
                &[]
            )
            .unwrap(),
            "ANALYZE \"public\".\"t; DROP TABLE x\""
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn stats_update_analyzes_stale_tables_only() {
        let stale = vec![("public".to_string(), "orders".to_string())];
        assert_eq!(
            build_command(
                MaintenanceType::StatsUpdate,
                &Target::Database("d".into()),
                &Default::default(),
                &stale
            )
            .unwrap(),
            "ANALYZE \"public\".\"orders\""
        );
        assert_eq!(
            build_command(
                MaintenanceType::StatsUpdate,
                &Target::Database("d".into()),
                &Default::default(),
                &[]
            ),
            None
        );
    }

    #[test]
    fn types_and_timeouts() {
        assert_eq!(
            MaintenanceType::parse("stats_update"),
            Ok(MaintenanceType::StatsUpdate)
        );
        assert!(MaintenanceType::parse("defrag").is_err());
        for ok in ["5s", "100", "250ms", "2min", "1h"] {
            assert!(valid_timeout(ok), "{ok}");
        }
        for bad in ["", "s", "5 s", "5s; DROP", "-1", "5sec"] {
            assert!(!valid_timeout(bad), "{bad}");
        }
    }

    #[test]
    fn permission_skips_are_recognised_in_every_majors_words() {
        let old = "skipping \"secret\" --- only table or database owner can vacuum it".to_string();
        let new = "permission denied to vacuum \"secret\", skipping it".to_string();
        let other = "skipping vacuum of \"t\" --- lock not available".to_string();
        assert!(is_permission_skip(&old) && is_permission_skip(&new));
        assert!(!is_permission_skip("permission denied to analyze \"t\""));
        assert_eq!(
            permission_skip_error([&old]).as_deref(),
            Some("permission denied: skipping \"secret\" --- only table or database owner can vacuum it")
        );
        assert_eq!(permission_skip_error([&new]), Some(new.clone()));
        assert_eq!(permission_skip_error(std::iter::empty::<&String>()), None);
        // SKIP_LOCKED's skip, or a view's, is not for want of rights.
        assert!(!is_permission_skip(&other));
        assert!(!is_permission_skip(
            "skipping \"v\" --- cannot vacuum non-tables or special system tables"
        ));
    }
}
