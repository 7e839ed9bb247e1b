#!/usr/bin/env bash
# Delivery latency of alert notifications (target <= 1 s at the default intervals): a rule fires
# and resolves BENCH_ROUNDS times through process_alerts(); each time, from just before the
# committing psql call to the receipt at a webhook on 127.0.0.1 (bench/webhook_sink.py).
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-20}
sink_port=59300
bench_cluster delivery 55441 "shared_preload_libraries = 'admin_toolkit'"
psql_bench -c "CREATE EXTENSION admin_toolkit"
# Rows inserted while the worker's first upkeep creates today's partition can fail: wait for it.
until [ "$(psql_bench -At -c "SELECT count(*) FROM pg_class WHERE relname = 'performance_metrics_p' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD')")" = 1 ]; do sleep 0.2; done
receipts="$BENCH_DIR/receipts"
: >"$receipts"
python3 "$(dirname "$0")/webhook_sink.py" "$sink_port" "$receipts" &
sink_pid=$!
trap 'kill $sink_pid 2>/dev/null; bench_stop' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$sink_port") 2>/dev/null; do sleep 0.1; done
psql_bench <<SQL
INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target) VALUES ('bench', 'webhook', 'http://127.0.0.1:$sink_port/');
INSERT INTO admin_toolkit.metric_definitions (metric_type, metric_name, metric_unit, description) VALUES ('app', 'queue', 'count', 'bench');
INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value, notification_channels)
     VALUES ('bench', 'app', 'queue', '>', 10, ARRAY['bench']);
SQL
latencies="$BENCH_DIR/latencies"
: >"$latencies"
expected=0
for _ in $(seq "$rounds"); do
    for value in 11 5; do
        expected=$((expected + 1))
        start=$(date +%s.%N)
        psql_bench -c "INSERT INTO admin_toolkit.performance_metrics (metric_type, metric_name, metric_value) VALUES ('app', 'queue', $value); SELECT count(*) FROM admin_toolkit.process_alerts();" >/dev/null
        until [ "$(wc -l <"$receipts")" -ge "$expected" ]; do sleep 0.002; done
        received=$(sed -n "${expected}p" "$receipts" | cut -d' ' -f1)
        awk -v a="$start" -v b="$received" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }' >>"$latencies"
    done
done
p50=$(median <"$latencies")
p99=$(sort -g "$latencies" | awk '{ v[n++] = $1 } END { i = int(0.99 * (n - 1) + 0.5); print v[i] }')
max=$(sort -g "$latencies" | tail -1)
fired=$(grep -c ' fired' "$receipts"); resolved=$(grep -c ' resolved' "$receipts")
record "alert delivery latency, commit of the firing (or resolving) transaction to receipt at a local webhook, $((rounds * 2)) notifications, default intervals (target <= 1 s)" \
       "p50 ${p50} ms, p99 ${p99} ms, max ${max} ms; $fired fired and $resolved resolved received, each once"
