#!/usr/bin/env bash
# Scheduler: (1) the tick's due-schedule lookup with 1,000 schedules (target: tick <= 5 ms),
# timed as the worker runs it; (2) how late due jobs start after their minute begins (target:
# within 1 s), from 10 every-minute schedules over BENCH_MINUTES minutes.
source "$(dirname "$0")/lib.sh"
minutes=${BENCH_MINUTES:-3}
bench_cluster scheduler 55438 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "max_worker_processes = 32"
psql_bench -c "CREATE EXTENSION admin_toolkit" -c "CREATE TABLE t (id int)"
psql_bench -c "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression)
               SELECT 'analyze', 'public', 't', format('%s %s * * *', g % 60, g % 24) FROM generate_series(1, 990) g"
lookup="SELECT schedule_id, schedule_expression FROM admin_toolkit.maintenance_schedules WHERE is_active AND next_run <= now() ORDER BY next_run;"
ms=$(times 200 "$lookup" | median)
psql_bench -c "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression)
               SELECT 'analyze', 'public', 't', '* * * * *' FROM generate_series(1, 10)"
sleep $(( minutes * 60 ))
delay=$(psql_bench -At -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - date_trunc('minute', started_at)))::numeric, 3)
                             || ' s median, ' || round(max(extract(epoch FROM started_at - date_trunc('minute', started_at)))::numeric, 3)
                             || ' s worst, over ' || count(*) || ' runs (' || count(*) FILTER (WHERE status = 'success') || ' succeeded)'
                             FROM admin_toolkit.maintenance_runs")
record "scheduler: due-schedule lookup with 1,000 schedules, median of 200 (target: tick <= 5 ms)" "${ms} ms"
record "scheduler: start delay of every-minute jobs after their minute begins, ${minutes} min (target <= 1 s)" "$delay"
