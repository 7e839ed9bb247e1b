#!/usr/bin/env bash
# process_alerts() over 10 million rows of metric history (target: <= 10 ms): admin_toolkit
# against the seed's PL/pgSQL process_alerts on the seed's schema with the same rows, same
# five rules, interleaved. BENCH_ROWS changes the row count.
source "$(dirname "$0")/lib.sh"
rows=${BENCH_ROWS:-10000000}
rounds=${BENCH_ROUNDS:-5}
bench_cluster alerts 55433 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "max_wal_size = 8GB" "shared_buffers = 1GB" "maintenance_work_mem = 512MB"
psql_bench -c "CREATE EXTENSION admin_toolkit"
load_seed seed "-- Performance metrics collection" "-- Schedule metrics collection"

# Daily partitions for the last 20 days (one row per day, then upkeep gives each its partition
# with its indexes), then the rows spread over those days and all 19 metrics.
psql_bench <<SQL
INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value)
SELECT now() - make_interval(days => d), 'storage', 'database_size_bytes', 0 FROM generate_series(1, 20) d;
SELECT count(*) FROM admin_toolkit.maintain_partitions();
INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value, metric_unit)
SELECT now() - (g::float8 / $rows) * interval '20 days', d.metric_type, d.metric_name, random() * 1000, d.metric_unit
  FROM generate_series(1, $rows) g
  JOIN (SELECT row_number() OVER (ORDER BY metric_type, metric_name) - 1 AS k, * FROM admin_toolkit.metric_definitions) d
    ON d.k = g % 19;
INSERT INTO seed.performance_metrics (collected_at, metric_type, metric_name, metric_value, metric_unit)
SELECT collected_at, metric_type, metric_name, metric_value, metric_unit FROM admin_toolkit.performance_metrics;
VACUUM ANALYZE admin_toolkit.performance_metrics;
VACUUM ANALYZE seed.performance_metrics;
SQL
total=$(psql_bench -At -c "SELECT count(*) FROM admin_toolkit.performance_metrics")
ab_times "$rounds" "SELECT * FROM admin_toolkit.process_alerts();" "SELECT * FROM seed.process_alerts();" >"$BENCH_DIR/times"
ours=$(column_median "$BENCH_DIR/times" 1)
seed=$(column_median "$BENCH_DIR/times" 2)
ratio=$(awk -v a="$ours" -v b="$seed" 'BEGIN { printf "%.1f", b / a }')
record "process_alerts(), $total rows of metric history, 5 rules, median of $rounds (target <= 10 ms)" \
       "admin_toolkit ${ours} ms vs seed PL/pgSQL ${seed} ms: admin_toolkit ${ratio}x faster"
