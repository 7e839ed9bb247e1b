#!/usr/bin/env bash
# One metric collection with 1,000 tables and 100 idle connections (target: median <= 20 ms),
# admin_toolkit's collect_performance_metrics() against the seed's PL/pgSQL version on the
# seed's schema, interleaved in one session, each call its own transaction.
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-30}
bench_cluster collection 55432 "shared_preload_libraries = 'admin_toolkit, pg_stat_statements'" \
    "max_connections = 200" "admin_toolkit.collection_interval = 0"
psql_bench -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION admin_toolkit"
load_seed seed "-- Performance metrics collection" "-- Schedule metrics collection"
psql_bench -c "DO \$\$ BEGIN FOR i IN 1..1000 LOOP
                 EXECUTE format('CREATE TABLE public.t%s (id int PRIMARY KEY, v text)', i);
               END LOOP; END \$\$"
# 100 idle sessions: pgbench clients that sleep client-side between transactions.
echo '\sleep 1000 ms' >"$BENCH_DIR/idle.sql"
"$BIN/pgbench" -n -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -c 100 -j 4 -T 600 -f "$BENCH_DIR/idle.sql" postgres \
    >/dev/null 2>&1 &
idle_pid=$!
trap 'kill $idle_pid 2>/dev/null; bench_stop' EXIT
until [ "$(psql_bench -At -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'")" -ge 100 ]; do sleep 0.5; done

ab_times "$rounds" "SELECT admin_toolkit.collect_performance_metrics();" "SELECT seed.collect_performance_metrics();" >"$BENCH_DIR/times"
ours=$(column_median "$BENCH_DIR/times" 1)
seed=$(column_median "$BENCH_DIR/times" 2)
ratio=$(awk -v a="$ours" -v b="$seed" 'BEGIN { printf "%.2f", a / b }')
rows=$(psql_bench -At -c "SELECT count(*) FROM admin_toolkit.performance_metrics WHERE collected_at = (SELECT max(collected_at) FROM admin_toolkit.performance_metrics)")
record "collection cycle, 1,000 tables, 100 idle connections, median of $rounds (target <= 20 ms)" \
       "admin_toolkit ${ours} ms ($rows metrics) vs seed PL/pgSQL ${seed} ms (6 metrics): ratio ${ratio}"
