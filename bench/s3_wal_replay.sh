#!/usr/bin/env bash
# Recovery of archived WAL from S3 (moto over TLS, 127.0.0.1), side by side in one run on the
# same base backup and the same BENCH_SEGMENTS segments, interleaved over BENCH_ROUNDS rounds,
# each timed from pg_ctl start to promotion:
#   restore_command admin-toolkit wal-get --prefetch=0 (one segment per call: before #28),
#   admin-toolkit wal-get (default: 8 segments fetched ahead, 4 at a time, into a spool), and
#   pgbackrest archive-get with archive-async=y, process-max=2 (its queue fetched ahead into a
#   spool path; the same segments pushed to its repository with archive-push); and, for
#   reference, cp of the same segments from a local directory of uncompressed WAL (no fetch,
#   no decompression; still a copy per call, where a spooled segment is only renamed).
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-3}
segments=${BENCH_SEGMENTS:-64}
(cd "$BENCH_ROOT" && cargo build --release --locked -p admin-toolkit-cli >/dev/null 2>&1)
store=/tmp/admin_toolkit_bench_s3replay_store
rm -rf "$store"; mkdir -p "$store"
CLI=$store/admin-toolkit
cp "$BENCH_ROOT/target/release/admin-toolkit" "$CLI"
source "$(dirname "$0")/s3_lib.sh"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
mapfile -t s3lines < <(s3_settings)
bench_cluster s3replay 55439 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "archive_mode = on" "archive_library = 'admin_toolkit'" "admin_toolkit.archive_location = 's3://bench/ours/wal/'" \
    "${s3lines[@]}" "max_wal_size = 8GB" "wal_keep_size = 4GB" "checkpoint_timeout = 30min"
trap stop_all EXIT
echo "host replication postgres 127.0.0.1/32 trust" >>"$BENCH_DIR/data/pg_hba.conf"
psql_bench -c "SELECT pg_reload_conf()" >/dev/null
pgbackrest_config
mkdir -p "$store/pgbr/spool"; [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
pgbr stanza-create >/dev/null
psql_bench -c "CREATE TABLE filler (x text)" >/dev/null
as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -X none -c fast -D "$store/base" >/dev/null
start_lsn=$(sed -n 's/^START WAL LOCATION: \([^ ]*\).*/\1/p' "$store/base/backup_label")
inserts=0
until [ "$(psql_bench -At -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn') >= $segments * 16777216")" = t ]; do
    psql_bench -c "INSERT INTO filler SELECT md5(random()::text) FROM generate_series(1, 100000)" >/dev/null
    inserts=$((inserts + 1))
done
last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(psql_bench -At -c "SELECT coalesce(last_archived_wal >= '$last', false) FROM pg_stat_archiver")" = t ]; do sleep 0.2; done
wal_mb=$(psql_bench -At -c "SELECT (pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn') / 1e6)::int")
as_pg mkdir -p "$store/plainwal"
for f in $(psql_bench -At -c "SELECT name FROM pg_ls_waldir() WHERE length(name) = 24 AND name <= '$last' ORDER BY name"); do
    as_pg cp "$BENCH_DIR/data/pg_wal/$f" "$store/plainwal/$f"
done
# The same segments into pgBackRest's repository (archive-push of the files still in pg_wal).
for f in $(psql_bench -At -c "SELECT name FROM pg_ls_waldir() WHERE length(name) = 24 AND name <= '$last' ORDER BY name"); do
    pgbr archive-push "$BENCH_DIR/data/pg_wal/$f" >/dev/null 2>&1 || true
done
s3opts="--s3-endpoint=https://127.0.0.1:$S3_PORT --s3-path-style=on --s3-credentials-file=$CREDENTIALS --s3-ca-file=$CA"
replay() { # NAME RESTORE_COMMAND -> ms from start to promotion
    local data=$store/replay/$1 t0 t1
    rm -rf "$data" "$data.wal-prefetch" "$store/pgbr/spool"/*
    as_pg mkdir -p "$store/replay"; as_pg cp -a "$store/base" "$data"
    as_pg touch "$data/recovery.signal"
    printf "restore_command = '%s'\nrecovery_target_action = 'promote'\narchive_mode = off\nshared_preload_libraries = ''\n" "$2" \
        | as_pg tee -a "$data/postgresql.auto.conf" >/dev/null
    chmod 700 "$data"
    t0=$(now_ms)
    as_pg "$BIN/pg_ctl" -D "$data" -l "$data.log" -w -t 3600 -o "-p 55440 -c unix_socket_directories=$store" start >/dev/null \
        || { echo "restored server did not start: see $data.log" >&2; exit 1; }
    until [ "$("$BIN/psql" -X -At -h 127.0.0.1 -p 55440 -U postgres -d postgres -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ]; do sleep 0.05; done
    t1=$(now_ms)
    rows=$("$BIN/psql" -X -At -h 127.0.0.1 -p 55440 -U postgres -d postgres -c 'SELECT count(*) FROM filler')
    [ "$rows" = "$((inserts * 100000))" ] || { echo "$1 recovered $rows rows, not $((inserts * 100000))" >&2; exit 1; }
    as_pg "$BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo $((t1 - t0))
}
: >"$BENCH_DIR/replay"
for r in $(seq "$rounds"); do
    serial=$(replay serial "$CLI wal-get --archive=s3://bench/ours/wal/ $s3opts --prefetch=0 %f %p")
    prefetch=$(replay prefetch "$CLI wal-get --archive=s3://bench/ours/wal/ $s3opts %f %p")
    theirs=$(replay pgbackrest "pgbackrest --config=$store/pgbackrest.conf --stanza=bench --pg1-path=$store/replay/pgbackrest --archive-async --spool-path=$store/pgbr/spool archive-get %f \"%p\"")
    floor=$(replay local "cp $store/plainwal/%f %p")
    echo "$serial $prefetch $theirs $floor" | tee -a "$BENCH_DIR/replay"
done
sm=$(column_median "$BENCH_DIR/replay" 1); pm=$(column_median "$BENCH_DIR/replay" 2); tm=$(column_median "$BENCH_DIR/replay" 3)
fm=$(column_median "$BENCH_DIR/replay" 4)
rate() { awk -v m="$wal_mb" -v t="$1" 'BEGIN { printf "%.0f", m * 1e3 / t }'; }
record "WAL recovery from S3 (moto over TLS, 127.0.0.1): $segments segments ($wal_mb MB) replayed from a base backup to promotion, median of $rounds, interleaved (bench/s3_wal_replay.sh)" \
    "wal-get with prefetch (8 ahead, 4 at a time) ${pm} ms = $(rate "$pm") MB/s vs wal-get --prefetch=0 ${sm} ms = $(rate "$sm") MB/s ($(awk -v a="$sm" -v b="$pm" 'BEGIN { printf "%.2f", a / b }')x) vs pgbackrest archive-get archive-async=y process-max=2 ${tm} ms = $(rate "$tm") MB/s; for reference, cp from a local directory of uncompressed WAL (no fetch, no decompression, but a 16 MB copy per call where the spool only renames) ${fm} ms = $(rate "$fm") MB/s"
