#!/usr/bin/env bash
# Backups and restores of a ~1 GB pgbench database, side by side with pg_basebackup in one run:
#  1. full backup: execute_backup (zstd level 3, SHA-256 per chunk) vs pg_basebackup -Ft
#     -Z zstd:3 -X none --manifest-checksums=SHA256 (client-side, single-threaded) and vs
#     pg_basebackup --compress=server-zstd:level=3,workers=2 (the server compresses on two
#     threads), interleaved over BENCH_ROUNDS rounds;
#  2. restore throughput: admin-toolkit restore vs extracting pg_basebackup's base.tar.zst;
#  3. incremental after updating 1 % of rows (a contiguous 1 %, then 1 % spread over the table);
#     on PostgreSQL 17 and later beside pg_basebackup --incremental (WAL summaries,
#     summarize_wal = on), each built on the previous backup's manifest;
#  4. WAL replay of ~1 GB: each restored backup recovers to the end of the archive and promotes
#     (restore_command: admin-toolkit wal-get, or cp from an uncompressed copy for pg_basebackup);
#  5. archive module throughput: a backlog of segments archived by admin_toolkit vs
#     archive_command 'cp' (the documentation's example; no compression, no fsync).
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-3}
scale=${BENCH_SCALE:-68}
(cd "$BENCH_ROOT" && cargo build --release --locked -p admin-toolkit-cli >/dev/null 2>&1)
store=/tmp/admin_toolkit_bench_backup_store
rm -rf "$store"; mkdir -p "$store"/{ours,theirs,wal,plainwal,restore}
# A copy the postgres OS user can run (as restore_command), wherever the checkout is.
CLI=$store/admin-toolkit
cp "$BENCH_ROOT/target/release/admin-toolkit" "$CLI"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
summaries=(); [ "$PG_MAJOR" -ge 17 ] && summaries=("summarize_wal = on")
bench_cluster backup 55436 "${summaries[@]}" "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "archive_mode = on" "archive_library = 'admin_toolkit'" "admin_toolkit.archive_location = '$store/wal'" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min" "shared_buffers = 1GB" "max_wal_senders = 4"
"$BIN/pgbench" -q -i -s "$scale" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres >/dev/null 2>&1
psql_bench -c "CREATE EXTENSION admin_toolkit" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
db_bytes=$(psql_bench -At -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
full_id=$(psql_bench -At -c "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) VALUES ('full', '0 3 * * 0', 7, '$store/ours', 3) RETURNING schedule_id")
incr_id=$(psql_bench -At -c "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) VALUES ('incremental', '0 3 * * 1-6', 7, '$store/ours', 3) RETURNING schedule_id")
now_ms() { date +%s%3N; }
take_ours() { # schedule -> "ms bytes path"
    local t0 t1 id
    t0=$(now_ms); id=$(psql_bench -At -c "SELECT admin_toolkit.execute_backup($1, true)"); t1=$(now_ms)
    psql_bench -At -F' ' -c "SELECT $((t1 - t0)), backup_size_bytes, backup_path FROM admin_toolkit.backup_history WHERE backup_id = $id AND status = 'completed'"
}
# Each backup waits for its last WAL segment to be archived: let the archiver catch up with
# the update's WAL first, as it had before the full backups.
settle() {
    local last
    psql_bench -c CHECKPOINT >/dev/null
    last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
    until [ "$(psql_bench -At -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.1; done
}
# theirs_tar DIR [pg_basebackup options]: pg_basebackup -Ft of the cluster into DIR/base.tar.zst
# (zstd level 3): compressed by pg_basebackup itself when built with zstd, else (18.6 from PyPI
# has neither zstd nor lz4, only gzip) its tar stream on stdout through zstd -3, the same work.
# The manifest is DIR/backup_manifest, or inside the stream (manifest_of takes it out).
probe=$(as_pg "$BIN/pg_basebackup" -Z zstd:3 -D /nonexistent -h 127.0.0.1 -p 1 2>&1 || true)
if [[ "$probe" == *"does not support compression with ZSTD"* ]]; then
    basebackup_zstd=no
    echo "bench: this pg_basebackup has no zstd: its tar stream goes through zstd -3; no server-side compression round" >&2
else
    basebackup_zstd=yes
fi
theirs_tar() {
    local dir=$1; shift
    if [ "$basebackup_zstd" = yes ]; then
        as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -D "$dir" -Ft -Z zstd:3 -X none \
            --manifest-checksums=SHA256 -c fast "$@" 2>/dev/null
    else
        as_pg mkdir -p "$dir"
        as_pg bash -o pipefail -c '"$0" -h 127.0.0.1 -p "$1" -U postgres -D - -Ft -X none --manifest-checksums=SHA256 -c fast "${@:3}" | zstd -q -3 -o "$2/base.tar.zst"' \
            "$BIN/pg_basebackup" "$BENCH_PORT" "$dir" "$@" 2>/dev/null
    fi
}
manifest_of() { # DIR -> DIR/backup_manifest exists
    [ -f "$1/backup_manifest" ] || as_pg bash -o pipefail -c 'zstd -dc "$0/base.tar.zst" | tar -xO backup_manifest >"$0/backup_manifest"' "$1"
}
: >"$BENCH_DIR/full"
for r in $(seq "$rounds"); do
    settle
    read -r ours_ms ours_bytes ours_path < <(take_ours "$full_id")
    [ -n "$ours_path" ] || { echo "our backup failed" >&2; exit 1; }
    psql_bench -c CHECKPOINT >/dev/null
    theirs=$store/theirs/r$r
    t0=$(now_ms)
    theirs_tar "$theirs"
    t1=$(now_ms)
    theirs_bytes=$(du -sb "$theirs" | cut -f1)
    server=$store/theirs/s$r
    t2=0; t3=0; server_bytes=0
    if [ "$basebackup_zstd" = yes ]; then
        psql_bench -c CHECKPOINT >/dev/null
        t2=$(now_ms)
        as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -D "$server" -Ft \
            --compress=server-zstd:level=3,workers=2 -X none --manifest-checksums=SHA256 -c fast 2>/dev/null
        t3=$(now_ms)
        server_bytes=$(du -sb "$server" | cut -f1)
    fi
    echo "$ours_ms $((t1 - t0)) $ours_bytes $theirs_bytes $((t3 - t2)) $server_bytes" >>"$BENCH_DIR/full"
    rm -rf "$server"
    if [ "$r" -lt "$rounds" ]; then
        rm -rf "$ours_path" "$theirs"
        psql_bench -c "UPDATE admin_toolkit.backup_history SET status = 'deleted' WHERE backup_path = '$ours_path'" >/dev/null
    fi
done
full_path=$ours_path
om=$(column_median "$BENCH_DIR/full" 1); tm=$(column_median "$BENCH_DIR/full" 2)
ob=$(column_median "$BENCH_DIR/full" 3); tb=$(column_median "$BENCH_DIR/full" 4)
theirs_how="pg_basebackup -Ft -Z zstd:3"
[ "$basebackup_zstd" = yes ] || theirs_how="pg_basebackup -Ft -D - piped into zstd -3 (this build has no zstd)"
record "full backup of a $((db_bytes / 1000000)) MB pgbench database (scale $scale), median of $rounds, interleaved (bench/backup_restore.sh)" \
    "execute_backup ${om} ms, $((${ob%.*} / 1000000)) MB vs $theirs_how ${tm} ms, $((${tb%.*} / 1000000)) MB: time $(awk -v a="$om" -v b="$tm" 'BEGIN { printf "%.2f", a / b }')x, size $(awk -v a="$ob" -v b="$tb" 'BEGIN { printf "%.2f", a / b }')x of pg_basebackup's"
sm=$(column_median "$BENCH_DIR/full" 5); sb=$(column_median "$BENCH_DIR/full" 6)
[ "$basebackup_zstd" = yes ] && record "full backup of that database vs pg_basebackup with server-side compression, median of $rounds, interleaved" \
    "execute_backup ${om} ms, $((${ob%.*} / 1000000)) MB vs pg_basebackup --compress=server-zstd:level=3,workers=2 ${sm} ms, $((${sb%.*} / 1000000)) MB: time $(awk -v a="$om" -v b="$sm" 'BEGIN { printf "%.2f", a / b }')x, size $(awk -v a="$ob" -v b="$sb" 'BEGIN { printf "%.2f", a / b }')x"

# 2. restore throughput
: >"$BENCH_DIR/restore"
for r in $(seq "$rounds"); do
    rm -rf "$store/restore/a" "$store/restore/b"; mkdir -p "$store/restore/b"; chown postgres:postgres "$store/restore/b" 2>/dev/null || true
    sync; t0=$(now_ms)
    as_pg "$CLI" restore --backup "$full_path" --target-dir "$store/restore/a" --archive "$store/wal" 2>/dev/null
    sync; t1=$(now_ms)
    as_pg tar -I zstd -xf "$theirs/base.tar.zst" -C "$store/restore/b"
    sync; t2=$(now_ms)
    echo "$((t1 - t0)) $((t2 - t1))" >>"$BENCH_DIR/restore"
done
ra=$(column_median "$BENCH_DIR/restore" 1); rb=$(column_median "$BENCH_DIR/restore" 2)
restored_bytes=$(du -sb "$store/restore/a" | cut -f1)
record "restore of that full backup ($((restored_bytes / 1000000)) MB restored), median of $rounds, interleaved" \
    "admin-toolkit restore (verifies every chunk, fsyncs) ${ra} ms = $(awk -v b="$restored_bytes" -v t="$ra" 'BEGIN { printf "%.0f", b / 1e3 / t }') MB/s vs tar -I zstd -xf base.tar.zst (no checks, no fsync) ${rb} ms = $(awk -v b="$restored_bytes" -v t="$rb" 'BEGIN { printf "%.0f", b / 1e3 / t }') MB/s"

# 3. incrementals after 1 % of rows changed
accounts=$((scale * 100000)); one=$((accounts / 100))
psql_bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $one" >/dev/null
# take_theirs_incremental PREVIOUS NAME: pg_basebackup --incremental on PREVIOUS's manifest,
# compressed as the full ones; prints "ms bytes".
take_theirs_incremental() {
    local dir=$store/theirs/$2 t0 t1
    manifest_of "$1"
    psql_bench -c CHECKPOINT >/dev/null
    t0=$(now_ms)
    theirs_tar "$dir" --incremental="$1/backup_manifest"
    t1=$(now_ms)
    echo "$((t1 - t0)) $(du -sb "$dir" | cut -f1)"
}
settle
read -r i1_ms i1_bytes _ < <(take_ours "$incr_id")
[ "$PG_MAJOR" -ge 17 ] && read -r t1_ms t1_bytes < <(take_theirs_incremental "$theirs" i1)
psql_bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0" >/dev/null
settle
read -r i2_ms i2_bytes _ < <(take_ours "$incr_id")
[ "$PG_MAJOR" -ge 17 ] && read -r t2_ms t2_bytes < <(take_theirs_incremental "$store/theirs/i1" i2)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f %%", 100 * a / b }'; }
record "incremental backup after updating 1 % of pgbench_accounts ($one rows), vs the full backup above" \
    "contiguous 1 % (aid <= $one): ${i1_ms} ms, $((i1_bytes / 1000000)) MB = $(pct "$i1_ms" "$om") of the full's time, $(pct "$i1_bytes" "$ob") of its size; 1 % spread over every page (aid % 100 = 0): ${i2_ms} ms, $((i2_bytes / 1000000)) MB = $(pct "$i2_ms" "$om") time, $(pct "$i2_bytes" "$ob") size"
if [ "$PG_MAJOR" -ge 17 ]; then
    record "incremental backups as above vs $theirs_how --incremental (WAL summaries), each on the previous backup" \
        "contiguous 1 %: execute_backup ${i1_ms} ms, $((i1_bytes / 1000)) kB vs pg_basebackup ${t1_ms} ms, $((t1_bytes / 1000)) kB; spread 1 %: execute_backup ${i2_ms} ms, $((i2_bytes / 1000)) kB vs pg_basebackup ${t2_ms} ms, $((t2_bytes / 1000)) kB"
fi

# 4. WAL replay of ~1 GB from the archive
start_lsn=$(psql_bench -At -c "SELECT start_lsn FROM admin_toolkit.backup_history WHERE backup_path = '$full_path'")
psql_bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $((accounts * 3 / 4))" >/dev/null
last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(psql_bench -At -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.5; done
wal_mb=$(psql_bench -At -c "SELECT (pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn') / 1e6)::int")
for f in "$store"/wal/*.zst; do
    n=$(basename "$f" .zst); as_pg "$CLI" wal-get --archive "$store/wal" "$n" "$store/plainwal/$n"
done
replay() { # data_dir -> ms from start to promotion
    local data=$1 t0 t1
    chmod 700 "$data"
    t0=$(now_ms)
    as_pg "$BIN/pg_ctl" -D "$data" -l "$data.log" -w -t 3600 -o "-p 55437 -c archive_mode=off -c unix_socket_directories=$store" start >/dev/null \
        || { echo "restored server did not start: see $data.log" >&2; exit 1; }
    until [ "$("$BIN/psql" -X -At -h 127.0.0.1 -p 55437 -U postgres -d postgres -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ]; do sleep 0.2; done
    t1=$(now_ms)
    as_pg "$BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo $((t1 - t0))
}
rm -rf "$store/restore/a" "$store/restore/b"; mkdir -p "$store/restore/b"; chown postgres:postgres "$store/restore/b" 2>/dev/null || true
# --keep-network: the restored copy listens on TCP as its original did (replay() connects there).
as_pg "$CLI" restore --backup "$full_path" --target-dir "$store/restore/a" --archive "$store/wal" --keep-network 2>/dev/null
ours_replay=$(replay "$store/restore/a")
as_pg tar -I zstd -xf "$theirs/base.tar.zst" -C "$store/restore/b"
as_pg touch "$store/restore/b/recovery.signal"
echo "restore_command = 'cp $store/plainwal/%f %p'" | as_pg tee -a "$store/restore/b/postgresql.auto.conf" >/dev/null
theirs_replay=$(replay "$store/restore/b")
record "WAL replay: the full backup restored, recovering the $wal_mb MB of WAL written since it started, from the archive to promotion" \
    "restore_command admin-toolkit wal-get (zstd + SHA-256 check) ${ours_replay} ms = $(awk -v m="$wal_mb" -v t="$ours_replay" 'BEGIN { printf "%.0f", m * 1e3 / t }') MB/s vs pg_basebackup's restore with cp of uncompressed WAL ${theirs_replay} ms = $(awk -v m="$wal_mb" -v t="$theirs_replay" 'BEGIN { printf "%.0f", m * 1e3 / t }') MB/s"

# 5. archive throughput: a backlog of segments, archived once archiving is switched on
backlog() { # archive_library, archive_command -> "segments ms"
    psql_bench -c "ALTER SYSTEM SET archive_library = ''" -c "ALTER SYSTEM SET archive_command = ''" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    psql_bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $((accounts / 3))" >/dev/null
    local last n t0 t1
    last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
    n=$(psql_bench -At -c "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
    t0=$(now_ms)
    psql_bench -c "ALTER SYSTEM SET archive_library = '$1'" -c "ALTER SYSTEM SET archive_command = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
    until [ "$(psql_bench -At -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.05; done
    t1=$(now_ms)
    echo "$n $((t1 - t0))"
}
: >"$BENCH_DIR/archive"
for _ in $(seq 2); do
    read -r n1 ms1 < <(backlog admin_toolkit "")
    read -r n2 ms2 < <(backlog "" "cp %p $store/plainwal/%f")
    echo "$(awk -v n="$n1" -v t="$ms1" 'BEGIN { print n * 1000 / t }') $(awk -v n="$n2" -v t="$ms2" 'BEGIN { print n * 1000 / t }') $n1 $n2" >>"$BENCH_DIR/archive"
done
a1=$(column_median "$BENCH_DIR/archive" 1); a2=$(column_median "$BENCH_DIR/archive" 2)
record "archiving a backlog of $(column_median "$BENCH_DIR/archive" 3) WAL segments (16 MB) once archiving is switched on, median of 2, interleaved" \
    "admin_toolkit archive module (zstd, SHA-256, fsync) $(printf '%.1f' "$a1") segments/s vs archive_command 'cp' (no compression, no fsync) $(printf '%.1f' "$a2") segments/s"
