#!/usr/bin/env bash
# WAL archiving to S3 (moto over TLS, 127.0.0.1), a backlog at a time, side by side with
# pgBackRest in one run on one cluster: archiving is held back (a failing archiver) while
# BENCH_SEGMENTS segments of real WAL are written, then switched on, and the time until the
# archiver has caught up is measured, interleaved over BENCH_ROUNDS rounds:
#   admin_toolkit's archive module (zstd 3, SHA-256, conditional PUT, a block map per segment)
#   uploading the next ready segments ahead (admin_toolkit.archive_parallelism = 4, the
#   default), the same one segment
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
# Block maps kept, as after a first base backup: the archive module maps every segment too.
as_pg mkdir -p "$BENCH_DIR/data/pg_wal/admin_toolkit_blocks"
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
if [ "$rounds" -gt 0 ]; then
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
fi # BENCH_ROUNDS=0: the sustained load only

# Under a sustained load: pgbench (2 clients) writing WAL for BENCH_LOAD_SECONDS while each
# archiver at its best settings for the job archives; the archive lag (segments waiting with
# a .ready file, and the age of the oldest) sampled every 0.25 s from pg_ls_archive_statusdir().
load_seconds=${BENCH_LOAD_SECONDS:-30}
# The same WAL rate for both (pgbench --rate): unthrottled, each archiver's own CPU use would
# set how much WAL the other processes manage to write.
load_tps=${BENCH_LOAD_TPS:-150}
echo "INSERT INTO filler SELECT md5(random()::text) FROM generate_series(1, 2000);" >"$store/load.sql"
[ "$(id -u)" = 0 ] && chown postgres "$store/load.sql"
lag_sample="SELECT count(*), coalesce(extract(epoch FROM now() - min(modification)), 0)::numeric(10,2) FROM pg_ls_archive_statusdir() WHERE name ~ '^[0-9A-F]{24}[.]ready\$'"
segment_now="SELECT (pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'))::bigint"
percentile() { # FILE COLUMN P
    sort -n -k"$2" "$1" | awk -v c="$2" -v p="$3" '{ v[NR] = $c } END { i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i] }'
}
sustained() { # NAME SETTINGS... -> "segments p50 p99 p99_seconds"
    local name=$1 first end; shift
    for s in "$@"; do psql_bench -c "ALTER SYSTEM SET $s" >/dev/null; done
    psql_bench -c "SELECT pg_reload_conf()" >/dev/null
    # The archiver restarts on a new archive_library, at most once per 10 s
    # (PGARCH_RESTART_INTERVAL): the load starts once a segment went through the new one.
    local switched
    psql_bench -c "INSERT INTO filler SELECT 'x'" >/dev/null
    switched=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
    until [ "$(psql_bench -At -c "SELECT coalesce(last_archived_wal >= '$switched', false) FROM pg_stat_archiver")" = t ]; do sleep 0.1; done
    until [ "$(psql_bench -At -c "$lag_sample" | cut -d'|' -f1)" = 0 ]; do sleep 0.1; done
    first=$(psql_bench -At -c "$segment_now")
    : >"$BENCH_DIR/lag_$name"
    as_pg "$BIN/pgbench" -n -f "$store/load.sql" -c 2 -R "$load_tps" -T "$load_seconds" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres >/dev/null 2>&1 &
    local load=$!
    while kill -0 "$load" 2>/dev/null; do
        psql_bench -At -F' ' -c "$lag_sample" >>"$BENCH_DIR/lag_$name"
        sleep 0.25
    done
    wait "$load"
    end=$(psql_bench -At -c "$segment_now")
    echo "$(( (end - first) )) $(percentile "$BENCH_DIR/lag_$name" 1 50) $(percentile "$BENCH_DIR/lag_$name" 1 99) $(percentile "$BENCH_DIR/lag_$name" 2 99)"
}
read -r os o50 o99 o99s < <(sustained ours "archive_command = ''" "admin_toolkit.archive_parallelism = 4" "archive_library = 'admin_toolkit'")
read -r ts t50 t99 t99s < <(sustained theirs "archive_library = ''" "archive_command = 'pgbackrest --config=$store/pgbackrest.conf --stanza=bench --archive-async --spool-path=$store/pgbr/spool archive-push %p'")
rate() { awk -v n="$1" -v t="$load_seconds" 'BEGIN { printf "%.1f", n / t }'; }
record "WAL archiving to S3 under a sustained load: pgbench (2 clients, 2,000-row inserts, --rate $load_tps) for $load_seconds s, archive lag sampled every 0.25 s (segments with a .ready file; age of the oldest) (bench/s3_wal_backlog.sh)" \
    "admin_toolkit archive module (4 uploads ahead): $os segments written ($(rate "$os")/s), lag p50 $o50 / p99 $o99 segments, oldest ready p99 ${o99s} s vs pgbackrest archive-push archive-async=y process-max=2: $ts segments ($(rate "$ts")/s), lag p50 $t50 / p99 $t99 segments, oldest ready p99 ${t99s} s"
