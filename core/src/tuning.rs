//! Configuration advice from the machine and the workload, with PGTune's formulas (Linux,
//! PostgreSQL 15), plus the units needed to compare advice with current settings.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Web,
    Oltp,
    DataWarehouse,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Ssd,
    Hdd,
    San,
}

/// What the advice is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub memory_kb: u64,
    pub cpus: u32,
    pub max_connections: u32,
    pub workload: Workload,
    pub storage: Storage,
}

/// A recommended value: memory in kB, or a plain number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Kb(u64),
    Number(f64),
}

impl fmt::Display for Value {
    /// Memory as PGTune writes it: GB or MB when exact, kB otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Kb(kb) if kb > 0 && kb % (1024 * 1024) == 0 => {
                write!(f, "{}GB", kb / (1024 * 1024))
            }
            Value::Kb(kb) if kb > 0 && kb % 1024 == 0 => write!(f, "{}MB", kb / 1024),
            Value::Kb(kb) => write!(f, "{kb}kB"),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub name: &'static str,
    pub value: Value,
    pub reasoning: String,
    pub priority: &'static str,
}

/// Background worker slots the advice leaves for admin_toolkit: the launcher, the database
/// worker, the /metrics endpoint, and a few jobs at once (each running backup, maintenance run,
/// drill, facts job, deletion job or configuration change takes one).
pub const TOOLKIT_WORKER_SLOTS: u32 = 6;

const MB: u64 = 1024;
const GB: u64 = 1024 * 1024;

fn advice(name: &'static str, value: Value, priority: &'static str, reasoning: String) -> Advice {
    Advice {
        name,
        value,
        reasoning,
        priority,
    }
}

/// PGTune's recommendations for the machine.
pub fn recommend(m: &Machine) -> Vec<Advice> {
    let inputs = format!(
        "{} RAM, {} CPUs, max_connections {}, {:?} workload, {:?} storage",
        Value::Kb(m.memory_kb),
        m.cpus,
        m.max_connections,
        m.workload,
        m.storage
    );
    let mut out = memory_advice(m, &inputs);
    out.extend(wal_advice(m, &inputs));
    out.extend(planner_advice(m));
    out.extend(parallel_advice(m));
    out
}

/// Memory: shared buffers, the cache the planner counts on, and the work memories.
fn memory_advice(m: &Machine, inputs: &str) -> Vec<Advice> {
    use Workload::*;
    let ram = m.memory_kb;
    let shared_buffers = ram / 4;
    let effective_cache = ram * 3 / 4;
    let maintenance = (if m.workload == DataWarehouse {
        ram / 8
    } else {
        ram / 16
    })
    .min(8 * GB);
    let mut wal_buffers = (3 * shared_buffers / 100).min(16 * MB);
    if wal_buffers > 14 * MB {
        wal_buffers = 16 * MB;
    }
    let wal_buffers = wal_buffers.max(32);
    let worker_processes = if m.cpus >= 4 { u64::from(m.cpus) } else { 8 };
    let base_work_mem =
        (ram - shared_buffers) / ((u64::from(m.max_connections) + worker_processes) * 3);
    let work_mem = match m.workload {
        Web | Oltp => base_work_mem,
        DataWarehouse | Mixed => base_work_mem / 2,
    }
    .max(4 * MB);

    vec![
        advice(
            "shared_buffers",
            Value::Kb(shared_buffers),
            "high",
            format!("25% of RAM ({inputs})"),
        ),
        advice(
            "effective_cache_size",
            Value::Kb(effective_cache),
            "high",
            format!("75% of RAM: memory the OS cache and shared buffers hold ({inputs})"),
        ),
        advice(
            "maintenance_work_mem",
            Value::Kb(maintenance),
            "medium",
            format!(
                "RAM / {} (capped at 8GB) for VACUUM and CREATE INDEX ({inputs})",
                if m.workload == DataWarehouse { 8 } else { 16 }
            ),
        ),
        advice(
            "work_mem",
            Value::Kb(work_mem),
            "medium",
            format!(
                "(RAM - shared_buffers) / ((max_connections + worker processes) * 3){} ({inputs})",
                if matches!(m.workload, DataWarehouse | Mixed) {
                    " / 2"
                } else {
                    ""
                }
            ),
        ),
        advice(
            "wal_buffers",
            Value::Kb(wal_buffers),
            "low",
            format!("3% of shared_buffers, at most 16MB ({inputs})"),
        ),
    ]
}

/// WAL: how much is kept between checkpoints, and how they spread their writes.
fn wal_advice(m: &Machine, inputs: &str) -> Vec<Advice> {
    use Workload::*;
    let (min_wal, max_wal) = match m.workload {
        Web | Mixed => (GB, 4 * GB),
        Oltp => (2 * GB, 8 * GB),
        DataWarehouse => (4 * GB, 16 * GB),
    };
    vec![
        advice(
            "min_wal_size",
            Value::Kb(min_wal),
            "medium",
            format!("WAL kept for the {:?} workload ({inputs})", m.workload),
        ),
        advice(
            "max_wal_size",
            Value::Kb(max_wal),
            "medium",
            format!(
                "fewer forced checkpoints for the {:?} workload ({inputs})",
                m.workload
            ),
        ),
        advice(
            "checkpoint_completion_target",
            Value::Number(0.9),
            "medium",
            "spread checkpoint writes over 90% of the interval".into(),
        ),
    ]
}

/// The planner: what storage costs and how detailed statistics are.
fn planner_advice(m: &Machine) -> Vec<Advice> {
    use Workload::*;
    let statistics = if m.workload == DataWarehouse {
        500.0
    } else {
        100.0
    };
    let (random_page_cost, io_concurrency) = match m.storage {
        Storage::Hdd => (4.0, 2.0),
        Storage::Ssd => (1.1, 200.0),
        Storage::San => (1.1, 300.0),
    };
    vec![
        advice(
            "random_page_cost",
            Value::Number(random_page_cost),
            "medium",
            format!(
                "{:?} storage: random reads cost {}x a sequential read",
                m.storage, random_page_cost
            ),
        ),
        advice(
            "effective_io_concurrency",
            Value::Number(io_concurrency),
            "low",
            format!("concurrent I/O requests {:?} storage sustains", m.storage),
        ),
        advice(
            "default_statistics_target",
            Value::Number(statistics),
            "low",
            format!("statistics detail for the {:?} workload", m.workload),
        ),
    ]
}

/// Parallel query, on machines of 4 CPUs or more.
fn parallel_advice(m: &Machine) -> Vec<Advice> {
    use Workload::*;
    let mut out = Vec::new();
    if m.cpus >= 4 {
        let per_gather = if m.workload == DataWarehouse {
            m.cpus.div_ceil(2)
        } else {
            m.cpus.div_ceil(2).min(4)
        };
        let cpus = format!("{} CPUs", m.cpus);
        out.push(advice(
            "max_worker_processes",
            Value::Number(f64::from(m.cpus + TOOLKIT_WORKER_SLOTS)),
            "low",
            format!(
                "one per CPU ({cpus}) for parallel queries, plus {TOOLKIT_WORKER_SLOTS} for admin_toolkit's own processes"
            ),
        ));
        out.push(advice(
            "max_parallel_workers_per_gather",
            Value::Number(f64::from(per_gather)),
            "low",
            format!(
                "half the CPUs{} ({cpus})",
                if m.workload == DataWarehouse {
                    ""
                } else {
                    ", at most 4"
                }
            ),
        ));
        out.push(advice(
            "max_parallel_workers",
            Value::Number(f64::from(m.cpus)),
            "low",
            format!("one per CPU ({cpus})"),
        ));
        out.push(advice(
            "max_parallel_maintenance_workers",
            Value::Number(f64::from(m.cpus.div_ceil(2).min(4))),
            "low",
            format!("half the CPUs, at most 4 ({cpus})"),
        ));
    }
    out
}

/// The RAM an administrator types into PGTune for this machine. /proc/meminfo's MemTotal leaves
/// out what the kernel keeps for itself (24 GiB shows as about 23.5 GiB), and a quarter of that
/// would be advised as "6171021kB"; rounding to the nearest whole GB (nearest 256 MB below 4 GB)
/// gives the installed size, so the advice reads "6GB" as PGTune's does.
pub fn installed_memory_kb(mem_total_kb: u64) -> u64 {
    let step = if mem_total_kb >= 4 * GB { GB } else { 256 * MB };
    ((mem_total_kb + step / 2) / step).max(1) * step
}

/// The statement that applies one piece of advice (the value quoted as a literal).
pub fn alter_system_statement(name: &str, value: Value) -> String {
    format!(
        "ALTER SYSTEM SET {name} = '{}';",
        value.to_string().replace('\'', "''")
    )
}

/// kB in one unit of a pg_settings `unit` ("8kB", "kB", "MB", ...), `None` for unitless.
pub fn unit_kb(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0 / 1024.0,
        "kB" => 1.0,
        "8kB" => 8.0,
        "16kB" => 16.0,
        "32kB" => 32.0,
        "16MB" => 16.0 * 1024.0,
        "MB" => 1024.0,
        "GB" => 1024.0 * 1024.0,
        _ => return None,
    })
}

/// Whether a current setting (pg_settings' `setting` and `unit`) already has the advised value.
pub fn already_set(advised: Value, setting: &str, unit: Option<&str>) -> bool {
    let Ok(current) = setting.parse::<f64>() else {
        return false;
    };
    match advised {
        Value::Kb(kb) => match unit.and_then(unit_kb) {
            Some(per) => ((current * per) - kb as f64).abs() < 1.0,
            None => false,
        },
        Value::Number(n) => (current - n).abs() < 1e-9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(advice: &[Advice], name: &str) -> String {
        advice
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.to_string())
            .unwrap_or_default()
    }

    /// Expected values computed with PGTune's published formulas (pgtune.leopard.in.ua, Linux,
    /// PostgreSQL 15) for three machines.
    #[test]
    fn pgtune_web_16gb_4cpu_ssd() {
        let m = Machine {
            memory_kb: 16 * GB,
            cpus: 4,
            max_connections: 200,
            workload: Workload::Web,
            storage: Storage::Ssd,
        };
        let a = recommend(&m);
        let expect = [
            ("shared_buffers", "4GB"),
            ("effective_cache_size", "12GB"),
            ("maintenance_work_mem", "1GB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "100"),
            ("random_page_cost", "1.1"),
            ("effective_io_concurrency", "200"),
            ("work_mem", "20560kB"),
            ("min_wal_size", "1GB"),
            ("max_wal_size", "4GB"),
            ("max_worker_processes", "10"),
            ("max_parallel_workers_per_gather", "2"),
            ("max_parallel_workers", "4"),
            ("max_parallel_maintenance_workers", "2"),
        ];
        for (name, value) in expect {
            assert_eq!(value_of(&a, name), value, "{name}");
        }
    }

    #[test]
    fn pgtune_dw_64gb_16cpu_hdd() {
        let m = Machine {
            memory_kb: 64 * GB,
            cpus: 16,
            max_connections: 40,
            workload: Workload::DataWarehouse,
            storage: Storage::Hdd,
        };
        let a = recommend(&m);
        let expect = [
            ("shared_buffers", "16GB"),
            ("effective_cache_size", "48GB"),
            ("maintenance_work_mem", "8GB"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "500"),
            ("random_page_cost", "4"),
            ("effective_io_concurrency", "2"),
            ("work_mem", "149796kB"),
            ("min_wal_size", "4GB"),
            ("max_wal_size", "16GB"),
            ("max_parallel_workers_per_gather", "8"),
            ("max_parallel_maintenance_workers", "4"),
        ];
        for (name, value) in expect {
            assert_eq!(value_of(&a, name), value, "{name}");
        }
    }

    #[test]
    fn pgtune_mixed_2gb_2cpu_san() {
        let m = Machine {
            memory_kb: 2 * GB,
            cpus: 2,
            max_connections: 100,
            workload: Workload::Mixed,
            storage: Storage::San,
        };
        let a = recommend(&m);
        assert_eq!(value_of(&a, "shared_buffers"), "512MB");
        assert_eq!(value_of(&a, "effective_cache_size"), "1536MB");
        assert_eq!(value_of(&a, "maintenance_work_mem"), "128MB");
        // 3% of 512MB is 15728kB: PGTune rounds anything above 14MB up to 16MB.
        assert_eq!(value_of(&a, "wal_buffers"), "16MB");
        // (2GB - 512MB) / ((100 + 8) * 3) / 2 = 2427kB, raised to the 4MB floor.
        assert_eq!(value_of(&a, "work_mem"), "4MB");
        assert_eq!(value_of(&a, "effective_io_concurrency"), "300");
        assert_eq!(
            value_of(&a, "max_worker_processes"),
            "",
            "fewer than 4 CPUs: no parallel advice"
        );
    }

    #[test]
    fn machine_memory_reads_as_the_installed_size() {
        // This project's 24 GiB test machine reports MemTotal 24683656 kB.
        assert_eq!(installed_memory_kb(24_683_656), 24 * GB);
        assert_eq!(installed_memory_kb(16_382_000), 16 * GB);
        assert_eq!(installed_memory_kb(1_995_000), 2 * GB);
        assert_eq!(installed_memory_kb(1_000_000), 1024 * MB);
        assert_eq!(installed_memory_kb(100), 256 * MB);
        let m = Machine {
            memory_kb: installed_memory_kb(24_683_656),
            cpus: 2,
            max_connections: 100,
            workload: Workload::Web,
            storage: Storage::Ssd,
        };
        let a = recommend(&m);
        assert_eq!(value_of(&a, "shared_buffers"), "6GB");
        assert_eq!(value_of(&a, "effective_cache_size"), "18GB");
        assert_eq!(value_of(&a, "maintenance_work_mem"), "1536MB");
    }

    #[test]
    fn advice_becomes_an_alter_system_statement() {
        assert_eq!(
            alter_system_statement("shared_buffers", Value::Kb(6 * GB)),
            "ALTER SYSTEM SET shared_buffers = '6GB';"
        );
        assert_eq!(
            alter_system_statement("random_page_cost", Value::Number(1.1)),
            "ALTER SYSTEM SET random_page_cost = '1.1';"
        );
    }

    #[test]
    fn units_compare_across_representations() {
        // shared_buffers = 128MB is 16384 pages of 8kB.
        assert!(already_set(Value::Kb(128 * MB), "16384", Some("8kB")));
        assert!(!already_set(Value::Kb(4 * GB), "16384", Some("8kB")));
        assert!(already_set(Value::Kb(GB), "1024", Some("MB")));
        assert!(already_set(Value::Number(0.9), "0.9", None));
        assert!(!already_set(Value::Number(1.1), "4", None));
    }
}
