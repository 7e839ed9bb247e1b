#!/usr/bin/env bash
# WAL archiving to S3 (moto over TLS, 127.0.0.1), a backlog at a time, side by side with
# pgBackRest in one run on one cluster: archiving is held back (a failing archiver) while
# BENCH_SEGMENTS segments of real WAL are written, then switched on, and the time until the
# archiver has caught up is measured, interleaved over BENCH_ROUNDS rounds:
#   admin_toolkit's archive module (zstd 3, SHA-256, conditional PUT) uploading the next ready
#   segments ahead (admin_toolkit.archive_parallelism = 4, the default), the same one segment
#   at a time (= 1, as before #28), and archive_command 'pgbackrest archive-push %p' at its best
#   settings for this job (zst 3, archive-async=y with a spool path, process-max=2).
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-2}
segments=${BENCH_SEGMENTS:-64}
store=/tmp/admin_toolkit_bench_s3wal_store
rm -rf "$store"; mkdir -p "$store"
source "$(dirname "$0")/s3_lib.sh"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
mapfile -t s3lines < <(s3_settings)
bench_cluster s3wal 55438 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "archive_mode = on" "archive_library = ''" "archive_command = 'false'" "${s3lines[@]}" \
    "admin_toolkit.archive_location = 's3://bench/ours/wal/'" "max_wal_size = 8GB" "checkpoint_timeout = 30min"
trap stop_all EXIT
pgbackrest_config
mkdir -p "$store/pgbr/spool"; [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store/pgbr"
pgbr stanza-create >/dev/null
psql_bench -c "CREATE TABLE filler (x text)" >/dev/null
# backlog N: N segments of real WAL written while archiving fails; prints the last one.
backlog() {
    local last
    for _ in $(seq "$1"); do
        psql_bench -c "INSERT INTO filler SELECT md5(random()::text) FROM generate_series(1, 100000)" >/dev/null
        last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
    done
    echo "$last"
}
# catch_up LAST SETTINGS...: applies the settings, reloads, waits until LAST is archived; ms.
catch_up() {
    local last=$1 t0 t1; shift
    t0=$(now_ms)
    for s in "$@"; do psql_bench -c "ALTER SYSTEM SET $s" >/dev/null; done
    psql_bench -c "SELECT pg_reload_conf()" >/dev/null
    until [ "$(psql_bench -At -c "SELECT coalesce(last_archived_wal >= '$last', false) FROM pg_stat_archiver")" = t ]; do sleep 0.05; done
    t1=$(now_ms)
    echo $((t1 - t0))
}
hold() { # back to a failing archiver
    psql_bench -c "ALTER SYSTEM SET archive_library = ''" -c "ALTER SYSTEM SET archive_command = 'false'" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
}
: >"$BENCH_DIR/wal"
for r in $(seq "$rounds"); do
    hold; last=$(backlog "$segments")
    ahead=$(catch_up "$last" "admin_toolkit.archive_parallelism = 4" "archive_library = 'admin_toolkit'")
    hold; last=$(backlog "$segments")
    serial=$(catch_up "$last" "admin_toolkit.archive_parallelism = 1" "archive_library = 'admin_toolkit'")
    hold; last=$(backlog "$segments")
    theirs=$(catch_up "$last" "archive_library = ''" "archive_command = 'pgbackrest --config=$store/pgbackrest.conf --stanza=bench --archive-async --spool-path=$store/pgbr/spool archive-push %p'")
    echo "$ahead $serial $theirs" | tee -a "$BENCH_DIR/wal"
done
am=$(column_median "$BENCH_DIR/wal" 1); sm=$(column_median "$BENCH_DIR/wal" 2); tm=$(column_median "$BENCH_DIR/wal" 3)
ours_bytes=$(s3_bytes ours/wal/); theirs_bytes=$(s3_bytes pgbackrest/archive/)
per_s() { awk -v n="$segments" -v t="$1" 'BEGIN { printf "%.1f", n / t * 1000 }'; }
record "WAL archiving to S3 (moto over TLS, 127.0.0.1): a backlog of $segments segments (16 MB) once archiving is switched on, median of $rounds, interleaved (bench/s3_wal_backlog.sh)" \
    "admin_toolkit archive module, 4 uploads ahead ${am} ms = $(per_s "$am") segments/s vs one at a time ${sm} ms = $(per_s "$sm") segments/s ($(awk -v a="$sm" -v b="$am" 'BEGIN { printf "%.2f", a / b }')x) vs pgbackrest archive-push archive-async=y process-max=2 ${tm} ms = $(per_s "$tm") segments/s; stored $((ours_bytes / 1000000)) MB vs $((theirs_bytes / 1000000)) MB for $((rounds * segments * 2)) and $((rounds * segments)) segments"
