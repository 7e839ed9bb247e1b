#!/usr/bin/env bash
# Scrape latency of the /metrics endpoint with 1,000 tables and 100 idle connections (target:
# p99 <= 10 ms and at least 10x faster than postgres_exporter), against postgres_exporter
# (Debian's prometheus-postgres-exporter, unpacked by scripts/prereqs.sh) on the same server,
# scrapes interleaved, each on a new HTTP connection as Prometheus makes them.
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-200}
ours_port=59188
exporter_port=59187
bench_cluster scrape 55439 "shared_preload_libraries = 'admin_toolkit'" "max_connections = 200" \
    "admin_toolkit.collection_interval = 5" "admin_toolkit.metrics_listen = '127.0.0.1:$ours_port'"
psql_bench -c "CREATE EXTENSION admin_toolkit"
psql_bench -c "DO \$\$ BEGIN FOR i IN 1..1000 LOOP
                 EXECUTE format('CREATE TABLE public.t%s (id int PRIMARY KEY, v text)', i);
               END LOOP; END \$\$" -c "ANALYZE"
echo '\sleep 1000 ms' >"$BENCH_DIR/idle.sql"
"$BIN/pgbench" -n -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -c 100 -j 4 -T 900 -f "$BENCH_DIR/idle.sql" postgres \
    >/dev/null 2>&1 &
idle_pid=$!
DATA_SOURCE_NAME="host=127.0.0.1 port=$BENCH_PORT user=postgres dbname=postgres sslmode=disable" \
    /opt/admin_toolkit-test/prometheus/usr/bin/prometheus-postgres-exporter \
    --web.listen-address="127.0.0.1:$exporter_port" >"$BENCH_DIR/exporter.log" 2>&1 &
exporter_pid=$!
trap 'kill $idle_pid $exporter_pid 2>/dev/null; bench_stop' EXIT
until [ "$(psql_bench -At -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'")" -ge 100 ]; do sleep 0.5; done
until curl -sf "http://127.0.0.1:$ours_port/metrics" | grep -q '^admin_toolkit_storage_database_size_bytes'; do sleep 0.5; done
until curl -sf "http://127.0.0.1:$exporter_port/metrics" | grep -q '^pg_up 1'; do sleep 0.5; done

read -r ours_p50 ours_p99 exp_p50 exp_p99 ours_bytes exp_bytes ours_series exp_series < <(
    python3 "$(dirname "$0")/scrape_times.py" "$rounds" \
        "http://127.0.0.1:$ours_port/metrics" "http://127.0.0.1:$exporter_port/metrics")
ratio=$(awk -v a="$exp_p99" -v b="$ours_p99" 'BEGIN { printf "%.1f", a / b }')
record "scrape latency, 1,000 tables, 100 idle connections, $rounds scrapes each, interleaved (target p99 <= 10 ms, >= 10x faster than postgres_exporter)" \
       "admin_toolkit /metrics p50 ${ours_p50} ms, p99 ${ours_p99} ms ($ours_series series, $ours_bytes bytes) vs postgres_exporter 0.11.1 p50 ${exp_p50} ms, p99 ${exp_p99} ms ($exp_series series, $exp_bytes bytes): postgres_exporter p99 is ${ratio}x ours"
