//! The tuning advice of `get_config_recommendations()` (in `api`): PGTune's formulas applied to this machine (RAM from
//! /proc/meminfo, CPU count, max_connections, admin_toolkit.storage_type and .workload), plus
//! advice from observed behaviour (temp files, requested checkpoints, cache hit ratio). Only
//! settings that differ from the advice are returned.

use admin_toolkit_core::tuning::Advice;
use pgrx::prelude::*;
use std::collections::HashMap;

/// Total RAM in kB, from /proc/meminfo.
pub(super) fn memory_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(super) fn cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// A setting as pg_settings holds it.
pub(super) struct Current {
    pub setting: String,
    pub unit: Option<String>,
    pub shown: String,
}

/// Current settings by name.
pub(super) fn current(names: &[&str]) -> spi::Result<HashMap<String, Current>> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT name::text, setting, unit, current_setting(name) FROM pg_catalog.pg_settings WHERE name = ANY($1)",
            None,
            &[names.into()],
        )?;
        let mut out = HashMap::new();
        for r in rows {
            out.insert(
                r.get::<String>(1)?.unwrap_or_default(),
                Current {
                    setting: r.get::<String>(2)?.unwrap_or_default(),
                    unit: r.get::<String>(3)?,
                    shown: r.get::<String>(4)?.unwrap_or_default(),
                },
            );
        }
        Ok(out)
    })
}

/// Statistics since the last reset that say a setting is too small.
pub(super) struct Observed {
    temp_files: i64,
    temp_bytes: i64,
    checkpoints_req: i64,
    checkpoints_timed: i64,
    hit_ratio: Option<f64>,
}

pub(super) fn observed() -> spi::Result<Observed> {
    Spi::connect(|c| {
        let r = c
            .select(
                concat!(
                    "SELECT (SELECT sum(temp_files) FROM pg_catalog.pg_stat_database)::bigint, \
                            (SELECT sum(temp_bytes) FROM pg_catalog.pg_stat_database)::bigint, \
                            c.requested, c.timed, \
                            (SELECT 100.0 * blks_hit / nullif(blks_hit + blks_read, 0) FROM pg_catalog.pg_stat_database \
                              WHERE datname = current_database())::float8 \
                       FROM ",
                    crate::checkpoint_counts!(),
                    " c"
                ),
                Some(1),
                &[],
            )?
            .first();
        Ok(Observed {
            temp_files: r.get::<i64>(1)?.unwrap_or(0),
            temp_bytes: r.get::<i64>(2)?.unwrap_or(0),
            checkpoints_req: r.get::<i64>(3)?.unwrap_or(0),
            checkpoints_timed: r.get::<i64>(4)?.unwrap_or(0),
            hit_ratio: r.get::<f64>(5)?,
        })
    })
}

/// Sharpens the formula advice with what the server has been doing.
pub(super) fn apply_observations(advice: &mut [Advice], seen: &Observed) {
    for a in advice.iter_mut() {
        match a.name {
            "work_mem" if seen.temp_files > 0 => {
                a.priority = "high";
                a.reasoning = format!(
                    "{} temporary files ({} bytes) written since the statistics were reset: sorts and hashes spill to disk; {}",
                    seen.temp_files, seen.temp_bytes, a.reasoning
                );
            }
            "max_wal_size" if seen.checkpoints_req > seen.checkpoints_timed => {
                a.priority = "high";
                a.reasoning = format!(
                    "{} checkpoints were forced by WAL volume against {} timed ones: max_wal_size is too small; {}",
                    seen.checkpoints_req, seen.checkpoints_timed, a.reasoning
                );
            }
            "shared_buffers" => {
                if let Some(ratio) = seen.hit_ratio.filter(|r| *r < 99.0) {
                    a.reasoning = format!(
                        "cache hit ratio is {ratio:.2}% (below 99%); {}",
                        a.reasoning
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn only_differences_are_returned_with_units_right() {
        // PostgreSQL 15's default checkpoint_completion_target is already 0.9.
        let ccs = Spi::get_one::<i64>(
            "SELECT count(*) FROM admin_toolkit.get_config_recommendations() \
             WHERE parameter_name = 'checkpoint_completion_target'",
        );
        assert_eq!(ccs, Ok(Some(0)));
        // shared_buffers is 128MB in the test cluster, a quarter of RAM on any test machine is more:
        // the current value is shown in memory units, not as 8kB pages.
        let shared = Spi::get_two::<String, String>(
            "SELECT current_value, reasoning FROM admin_toolkit.get_config_recommendations() \
             WHERE parameter_name = 'shared_buffers'",
        )
        .unwrap();
        assert_eq!(shared.0.as_deref(), Some("128MB"));
        assert!(shared.1.unwrap().contains("25% of RAM"));
    }

    #[pg_test]
    fn advice_reads_in_memory_units_with_the_statement_to_apply_it() {
        // The machine's RAM counts as its installed size, so memory advice is whole MB or GB
        // (PGTune's units), never a raw kB figure.
        let (value, statement) = Spi::get_two::<String, String>(
            "SELECT recommended_value, alter_system_statement FROM admin_toolkit.get_config_recommendations() \
             WHERE parameter_name = 'shared_buffers'",
        )
        .unwrap();
        let value = value.unwrap();
        assert!(
            value.ends_with("GB") || value.ends_with("MB"),
            "shared_buffers advised as {value}"
        );
        assert_eq!(
            statement.as_deref(),
            Some(format!("ALTER SYSTEM SET shared_buffers = '{value}';").as_str())
        );
        let every_row_has_one = Spi::get_one::<bool>(
            "SELECT bool_and(alter_system_statement = format('ALTER SYSTEM SET %s = %L;', parameter_name, recommended_value)) \
               FROM admin_toolkit.get_config_recommendations()",
        );
        assert_eq!(every_row_has_one, Ok(Some(true)));
    }

    #[pg_test]
    fn storage_type_changes_the_advice() {
        Spi::run("SET random_page_cost = 4").unwrap();
        Spi::run("SET admin_toolkit.storage_type = 'hdd'").unwrap();
        let hdd = Spi::get_one::<i64>(
            "SELECT count(*) FROM admin_toolkit.get_config_recommendations() WHERE parameter_name = 'random_page_cost'",
        );
        assert_eq!(hdd, Ok(Some(0)), "4 is right for hdd");
        Spi::run("SET admin_toolkit.storage_type = 'ssd'").unwrap();
        let ssd = Spi::get_one::<String>(
            "SELECT recommended_value FROM admin_toolkit.get_config_recommendations() WHERE parameter_name = 'random_page_cost'",
        );
        assert_eq!(ssd, Ok(Some("1.1".into())));
    }

    #[pg_test]
    fn workload_changes_the_advice() {
        let max_wal = || {
            Spi::get_one::<String>(
                "SELECT recommended_value FROM admin_toolkit.get_config_recommendations() \
                 WHERE parameter_name = 'max_wal_size'",
            )
        };
        // The test server's max_wal_size is PostgreSQL's 1GB: both are advised.
        Spi::run("SET admin_toolkit.workload = 'oltp'").unwrap();
        assert_eq!(max_wal(), Ok(Some("8GB".into())));
        Spi::run("SET admin_toolkit.workload = 'dw'").unwrap();
        assert_eq!(max_wal(), Ok(Some("16GB".into())));
    }

    #[pg_test(error = "invalid value for parameter \"admin_toolkit.workload\": \"batch\"")]
    fn unknown_workload_is_refused() {
        Spi::run("SET admin_toolkit.workload = 'batch'").unwrap();
    }
}
