#!/usr/bin/env bash
# Removing one day of metrics (1M rows) by retention — upkeep drops the day's partition —
# against DELETE of the same rows from an unpartitioned table holding the same three days,
# interleaved over BENCH_ROUNDS rounds, each round on freshly loaded rows.
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-3}
per_day=${BENCH_ROWS:-1000000}
bench_cluster retention 55434 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "max_wal_size = 8GB" "shared_buffers = 1GB"
psql_bench -c "CREATE EXTENSION admin_toolkit" \
    -c "CREATE TABLE plain_metrics (LIKE admin_toolkit.performance_metrics INCLUDING DEFAULTS)" \
    -c "CREATE INDEX ON plain_metrics (metric_type, metric_name, collected_at DESC)" \
    -c "CREATE INDEX ON plain_metrics (collected_at)"
set_retention() {
    psql_bench -c "ALTER SYSTEM SET admin_toolkit.metrics_retention_days = $1" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
}
: >"$BENCH_DIR/times"
for _ in $(seq "$rounds"); do
    set_retention 30
    # Days 10, 11 and 12 ago: day 12 is the one retention removes.
    psql_bench <<SQL >/dev/null
TRUNCATE plain_metrics;
INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value)
SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => d) + interval '1 hour',
       'storage', 'database_size_bytes', 0 FROM generate_series(10, 12) d;
SELECT count(*) FROM admin_toolkit.maintain_partitions();
INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value)
SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => d)
         + (g::float8 / $per_day) * interval '23 hours',
       'storage', 'database_size_bytes', g
  FROM generate_series(10, 12) d, generate_series(1, $per_day) g;
INSERT INTO plain_metrics SELECT * FROM admin_toolkit.performance_metrics;
CHECKPOINT;
SQL
    set_retention 11
    cutoff=$(psql_bench -At -c "SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - interval '11 days') AT TIME ZONE 'UTC'")
    {
        echo '\timing on'
        echo "SELECT count(*) FROM admin_toolkit.maintain_partitions() WHERE action = 'dropped';"
        echo "DELETE FROM plain_metrics WHERE collected_at < '$cutoff';"
    } | psql_bench -o /dev/null 2>&1 | awk '/^Time:/ { printf "%s ", $2 } END { print "" }' >>"$BENCH_DIR/times"
    left=$(psql_bench -At -c "SELECT (SELECT count(*) FROM admin_toolkit.performance_metrics) = (SELECT count(*) FROM plain_metrics)")
    [ "$left" = t ] || { echo "the two sides kept different rows" >&2; exit 1; }
    psql_bench -c "TRUNCATE admin_toolkit.performance_metrics" >/dev/null
done
drop=$(column_median "$BENCH_DIR/times" 1)
del=$(column_median "$BENCH_DIR/times" 2)
ratio=$(awk -v a="$drop" -v b="$del" 'BEGIN { printf "%.0f", b / a }')
record "removing one day of metrics ($per_day rows) by retention, median of $rounds" \
       "partition drop (maintain_partitions) ${drop} ms vs DELETE ${del} ms (space still to VACUUM): drop ${ratio}x faster"
