#!/usr/bin/env bash
# Worker CPU at a 10 s collection interval over 10 minutes (target: <= 0.1 % of one core).
# Reads utime + stime of the admin_toolkit worker and launcher from /proc before and after.
# BENCH_SECONDS shortens the run for a quick look.
source "$(dirname "$0")/lib.sh"
seconds=${BENCH_SECONDS:-600}
bench_cluster worker_cpu 55431 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 10"
psql_bench -c "CREATE EXTENSION admin_toolkit"
sleep 2
pids=$(psql_bench -At -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'admin_toolkit%'")
ticks() { local total=0; for p in $pids; do total=$(( total + $(awk '{ print $14 + $15 }' /proc/"$p"/stat) )); done; echo $total; }
hz=$(getconf CLK_TCK)
before=$(ticks); sleep "$seconds"; after=$(ticks)
collections=$(psql_bench -At -c "SELECT count(DISTINCT collected_at) FROM admin_toolkit.performance_metrics")
pct=$(awk -v t=$(( after - before )) -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.3f", 100 * t / hz / s }')
record "worker CPU, 10 s interval, ${seconds} s (target <= 0.1 %)" \
       "${pct} % of one core ($(( after - before )) ticks of 1/${hz} s; ${collections} collections, launcher + worker)"
