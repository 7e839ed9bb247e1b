#!/usr/bin/env bash
# (1) Audit events sustained per second with zero loss: GRANTs as fast as pgbench can send them
# for BENCH_SECONDS, then every one must be in security_audit_log and none dropped.
# (2) detect_suspicious_activity() over 10 M audit rows (target <= 50 ms), against the seed's
# PL/pgSQL version on the seed's table with the same rows, interleaved.
source "$(dirname "$0")/lib.sh"
seconds=${BENCH_SECONDS:-10}
rows=${BENCH_ROWS:-10000000}
rounds=${BENCH_ROUNDS:-5}
bench_cluster audit_detection 55436 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "max_wal_size = 8GB" "shared_buffers = 1GB" "maintenance_work_mem = 512MB" "admin_toolkit.audit_reads = off"
psql_bench -c "CREATE EXTENSION admin_toolkit" -c "CREATE TABLE granted_0 (id int)" -c "CREATE TABLE granted_1 (id int)" \
    -c "CREATE ROLE grantee NOLOGIN"
# One table per client: concurrent GRANTs on one table fail with "tuple concurrently updated".
echo 'GRANT SELECT ON granted_:client_id TO grantee;' >"$BENCH_DIR/grant.sql"
sent=$("$BIN/pgbench" -n -c 2 -j 2 -T "$seconds" -f "$BENCH_DIR/grant.sql" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres 2>/dev/null \
       | awk '/number of transactions actually processed/ { split($0, a, ": "); split(a[2], b, "/"); print b[1] }')
for _ in $(seq 60); do
    stored=$(psql_bench -At -c "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'GRANT'")
    [ "$stored" -ge "$sent" ] && break
    sleep 1
done
dropped=$(grep -c "audit queue full" "$BENCH_DIR/server.log" || true)
gaps=$(psql_bench -At -c "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'AUDIT_GAP'")
record "audit events sustained: GRANT via pgbench, 2 clients, ${seconds} s" \
       "$sent statements, $stored audit rows ($(( sent / seconds )) events/s), queue-full reports in the log: $dropped, AUDIT_GAP events: $gaps"

load_seed seed "-- Audit log table" "-- Password policy enforcement"
psql_bench <<SQL
TRUNCATE admin_toolkit.security_audit_log;
INSERT INTO admin_toolkit.security_audit_log (event_time, username, database_name, operation_type, success)
SELECT now() - make_interval(days => d), 'x', 'postgres', 'LOGIN', true FROM generate_series(1, 20) d;
SELECT count(*) FROM admin_toolkit.maintain_partitions();
-- A realistic mix: read summaries, logins (5 % failed), DDL, a few privilege changes, 200 users.
INSERT INTO admin_toolkit.security_audit_log (event_time, username, database_name, object_name, object_type,
                                               operation_type, client_ip, success, additional_info)
SELECT now() - (g::float8 / $rows) * interval '20 days', 'user' || (g % 200), 'postgres',
       't' || (g % 500), CASE WHEN g % 10 < 6 THEN 'table' END,
       CASE WHEN g % 10 < 6 THEN 'SELECT' WHEN g % 10 < 9 THEN 'LOGIN' WHEN g % 100 < 95 THEN 'CREATE TABLE' ELSE 'GRANT' END,
       ('10.0.0.' || (g % 250))::inet, (g % 20) <> 0,
       CASE WHEN g % 10 < 6 THEN jsonb_build_object('count', g % 40) ELSE '{}' END
  FROM generate_series(1, $rows) g;
INSERT INTO seed.security_audit_log (event_time, username, database_name, object_name, object_type, operation_type,
                                     client_ip, success, additional_info)
SELECT event_time, username, database_name, object_name, object_type, operation_type, client_ip, success, additional_info
  FROM admin_toolkit.security_audit_log;
VACUUM ANALYZE admin_toolkit.security_audit_log;
VACUUM ANALYZE seed.security_audit_log;
SQL
total=$(psql_bench -At -c "SELECT count(*) FROM admin_toolkit.security_audit_log")
ab_times "$rounds" "SELECT * FROM admin_toolkit.detect_suspicious_activity();" "SELECT * FROM seed.detect_suspicious_activity();" >"$BENCH_DIR/times"
ours=$(column_median "$BENCH_DIR/times" 1)
seed=$(column_median "$BENCH_DIR/times" 2)
ratio=$(awk -v a="$ours" -v b="$seed" 'BEGIN { printf "%.1f", b / a }')
record "detect_suspicious_activity(), $total audit rows over 20 days, median of $rounds (target <= 50 ms)" \
       "admin_toolkit ${ours} ms vs seed PL/pgSQL ${seed} ms: admin_toolkit ${ratio}x faster"
