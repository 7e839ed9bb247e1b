#!/usr/bin/env bash
# Backups to S3-compatible object storage, side by side with pgBackRest in one run, same data,
# same local S3 server (moto behind nginx for TLS with a private CA: pgBackRest speaks to S3 over
# TLS only; see s3_lib.sh):
#  1. full backup: execute_backup of an s3:// schedule (zstd 3, SHA-256 per chunk, multipart
#     upload, waits for its last WAL segment in the S3 archive) vs pgbackrest backup --type=full
#     (repo1-type=s3, process-max=2, compress-type=zst level 3, archive-check=n: it does not
#     wait for WAL), interleaved over BENCH_ROUNDS rounds; sizes are the objects stored;
#  2. incrementals after updating a contiguous 1 % of pgbench_accounts, then 1 % of its rows at
#     random: ours vs --type=incr;
#  3. restore of the full backup from S3 into an empty directory: admin-toolkit restore (every
#     chunk checked, fsynced) vs pgbackrest restore (delta off, type=none).
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-3}
scale=${BENCH_SCALE:-34}
(cd "$BENCH_ROOT" && cargo build --release --locked -p admin-toolkit-cli >/dev/null 2>&1)
store=/tmp/admin_toolkit_bench_s3_store
rm -rf "$store"; mkdir -p "$store"/restore
CLI=$store/admin-toolkit
cp "$BENCH_ROOT/target/release/admin-toolkit" "$CLI"
source "$(dirname "$0")/s3_lib.sh"
c=$certs
s3_port=$S3_PORT
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
mapfile -t s3lines < <(s3_settings)

bench_cluster s3backup 55437 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "archive_mode = on" "archive_library = 'admin_toolkit'" "admin_toolkit.archive_location = 's3://bench/ours/wal/'" \
    "${s3lines[@]}" "max_wal_size = 4GB" "checkpoint_timeout = 30min" "shared_buffers = 1GB"
trap stop_all EXIT
"$BIN/pgbench" -q -i -s "$scale" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres >/dev/null 2>&1
psql_bench -c "CREATE EXTENSION admin_toolkit" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
db_bytes=$(psql_bench -At -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
full_id=$(psql_bench -At -c "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) VALUES ('full', '0 3 * * 0', 7, 's3://bench/ours/full/', 3) RETURNING schedule_id")
incr_id=$(psql_bench -At -c "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) VALUES ('incremental', '0 3 * * 1-6', 7, 's3://bench/ours/incr/', 3) RETURNING schedule_id")

pgbackrest_config
pgbr stanza-create >/dev/null

take_ours() { # schedule -> "ms bytes path"
    local t0 t1 id
    t0=$(now_ms); id=$(psql_bench -At -c "SELECT admin_toolkit.execute_backup($1, true)"); t1=$(now_ms)
    psql_bench -At -F' ' -c "SELECT $((t1 - t0)), backup_size_bytes, backup_path FROM admin_toolkit.backup_history WHERE backup_id = $id AND status = 'completed'"
}
take_theirs() { # type -> "ms bytes"
    local t0 t1 before after
    before=$(s3_bytes pgbackrest/backup/)
    t0=$(now_ms); pgbr backup --type="$1" >/dev/null; t1=$(now_ms)
    after=$(s3_bytes pgbackrest/backup/)
    echo "$((t1 - t0)) $((after - before))"
}
settle() {
    local last
    psql_bench -c CHECKPOINT >/dev/null
    last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
    until [ "$(psql_bench -At -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.1; done
}

: >"$BENCH_DIR/full"
for r in $(seq "$rounds"); do
    settle
    read -r ours_ms ours_bytes ours_path < <(take_ours "$full_id")
    [ -n "$ours_path" ] || { echo "our backup failed: $(psql_bench -At -c "SELECT error_message FROM admin_toolkit.backup_history ORDER BY backup_id DESC LIMIT 1")" >&2; exit 1; }
    psql_bench -c CHECKPOINT >/dev/null
    read -r theirs_ms theirs_bytes < <(take_theirs full)
    echo "$ours_ms $theirs_ms $ours_bytes $theirs_bytes" >>"$BENCH_DIR/full"
done
full_path=$ours_path
om=$(column_median "$BENCH_DIR/full" 1); tm=$(column_median "$BENCH_DIR/full" 2)
ob=$(column_median "$BENCH_DIR/full" 3); tb=$(column_median "$BENCH_DIR/full" 4)
record "full backup to S3 (moto over TLS, 127.0.0.1) of a $((db_bytes / 1000000)) MB pgbench database (scale $scale), median of $rounds, interleaved (bench/s3_backup.sh)" \
    "execute_backup to s3:// ${om} ms, $((${ob%.*} / 1000000)) MB vs pgBackRest 2.45 (process-max=2, repo1-bundle=y, zst 3, archive-check=n) ${tm} ms, $((${tb%.*} / 1000000)) MB: time $(awk -v a="$om" -v b="$tm" 'BEGIN { printf "%.2f", a / b }')x, size $(awk -v a="$ob" -v b="$tb" 'BEGIN { printf "%.2f", a / b }')x of pgBackRest's"

# Incrementals after a contiguous 1 % update and after 1 % of rows updated at random: each
# tool's incremental on its own latest backup. Ours reads only the chunks holding blocks its
# block maps name (metadata.change_tracking); the data read is metadata.bytes_read.
one=$((scale * 1000))
full_ms=$om
incremental() { # label, update
    psql_bench -c "$2" >/dev/null
    settle
    read -r oi_ms oi_bytes oi_path < <(take_ours "$incr_id")
    [ -n "$oi_path" ] || { echo "our incremental failed" >&2; exit 1; }
    read -r oi_source oi_read oi_phases < <(psql_bench -At -F' ' -c "SELECT metadata->'change_tracking'->>'source', metadata->>'bytes_read', replace(metadata->>'phase_seconds', ' ', '') FROM admin_toolkit.backup_history WHERE backup_path = '$oi_path'")
    psql_bench -c CHECKPOINT >/dev/null
    read -r ti_ms ti_bytes < <(take_theirs incr)
    record "incremental backup to S3 after $1 of pgbench_accounts" \
        "execute_backup ${oi_ms} ms = $(awk -v a="$oi_ms" -v b="$full_ms" 'BEGIN { printf "%.1f %%", a / b * 100 }') of its full backup, $((oi_bytes / 1000)) kB stored, $((oi_read / 1000000)) MB read = $(awk -v a="$oi_read" -v b="$db_bytes" 'BEGIN { printf "%.1f %%", a / b * 100 }') of the database (change tracking: $oi_source; seconds per step $oi_phases) vs pgbackrest --type=incr ${ti_ms} ms = $(awk -v a="$ti_ms" -v b="$tm" 'BEGIN { printf "%.1f %%", a / b * 100 }') of its full, $((ti_bytes / 1000)) kB: time $(awk -v a="$oi_ms" -v b="$ti_ms" 'BEGIN { printf "%.2f", a / b }')x"
}
incremental "updating a contiguous 1 % ($one rows)" "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $one"
incremental "updating 1 % of its rows at random" "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE random() < 0.01"

# Restore of the last full backup from S3, interleaved.
: >"$BENCH_DIR/restore"
for r in $(seq "$rounds"); do
    rm -rf "$store/restore/ours" "$store/restore/theirs"
    mkdir -p "$store/restore/theirs"; [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store/restore"
    t0=$(now_ms)
    as_pg "$CLI" restore --backup "$full_path" --target-dir "$store/restore/ours" --archive s3://bench/ours/wal/ --s3-endpoint "https://127.0.0.1:$s3_port" \
        --s3-path-style on --s3-credentials-file "$store/credentials" --s3-ca-file "$c/ca.pem" >/dev/null 2>&1 \
        || { echo "our restore failed" >&2; exit 1; }
    t1=$(now_ms)
    pgbr restore --set="$(pgbr info --output=json | "$venv/bin/python" -c 'import json,sys; print([b for b in json.load(sys.stdin)[0]["backup"] if b["type"] == "full"][-1]["label"])')" \
        --pg1-path="$store/restore/theirs" --type=none >/dev/null
    t2=$(now_ms)
    echo "$((t1 - t0)) $((t2 - t1))" >>"$BENCH_DIR/restore"
done
restored=$(du -sb "$store/restore/ours" | cut -f1)
om=$(column_median "$BENCH_DIR/restore" 1); tm=$(column_median "$BENCH_DIR/restore" 2)
record "restore of that full backup from S3 ($((restored / 1000000)) MB restored), median of $rounds, interleaved" \
    "admin-toolkit restore (every chunk checked, fsynced) ${om} ms vs pgbackrest restore ${tm} ms: time $(awk -v a="$om" -v b="$tm" 'BEGIN { printf "%.2f", a / b }')x"

# 4. Delta restore: each tool's restored copy diverged by 1 % (a contiguous 1 % of
#    pgbench_accounts' blocks overwritten, a relation file removed, a stray file added), then
#    brought back to the same full backup: admin-toolkit restore --delta vs pgbackrest restore
#    --delta (both compare checksums), interleaved.
accounts_file=$(psql_bench -At -c "SELECT pg_relation_filepath('pgbench_accounts')")
branches_file=$(psql_bench -At -c "SELECT pg_relation_filepath('pgbench_branches')")
their_label=$(pgbr info --output=json | "$venv/bin/python" -c 'import json,sys; print([b for b in json.load(sys.stdin)[0]["backup"] if b["type"] == "full"][-1]["label"])')
diverge() { # DIR
    local blocks
    blocks=$(( $(stat -c %s "$1/$accounts_file") / 8192 ))
    as_pg dd if=/dev/urandom of="$1/$accounts_file" bs=8192 count=$((blocks / 100)) conv=notrunc status=none
    as_pg rm -f "$1/$branches_file"
    echo stray | as_pg tee "$1/base/stray_file" >/dev/null
}
: >"$BENCH_DIR/delta"
for r in $(seq "$rounds"); do
    diverge "$store/restore/ours"; diverge "$store/restore/theirs"
    t0=$(now_ms)
    as_pg "$CLI" restore --delta --backup "$full_path" --target-dir "$store/restore/ours" --archive s3://bench/ours/wal/ --s3-endpoint "https://127.0.0.1:$s3_port" \
        --s3-path-style on --s3-credentials-file "$store/credentials" --s3-ca-file "$c/ca.pem" >"$BENCH_DIR/delta.out" 2>&1 \
        || { echo "our delta restore failed: $(cat "$BENCH_DIR/delta.out")" >&2; exit 1; }
    t1=$(now_ms)
    pgbr restore --delta --set="$their_label" --pg1-path="$store/restore/theirs" --type=none >/dev/null
    t2=$(now_ms)
    echo "$((t1 - t0)) $((t2 - t1))" >>"$BENCH_DIR/delta"
done
[ ! -e "$store/restore/ours/base/stray_file" ] && [ -e "$store/restore/ours/$branches_file" ] || { echo "our delta restore left the divergence" >&2; exit 1; }
dm=$(column_median "$BENCH_DIR/delta" 1); dtm=$(column_median "$BENCH_DIR/delta" 2)
record "delta restore from S3 of a restored copy diverged by 1 % (a contiguous 1 % of pgbench_accounts overwritten, a relation file removed, a stray file), back to that full backup, median of $rounds, interleaved" \
    "admin-toolkit restore --delta ${dm} ms = $(awk -v a="$dm" -v b="$om" 'BEGIN { printf "%.0f %%", a / b * 100 }') of its full restore ($(grep '^brought' "$BENCH_DIR/delta.out" | sed 's/.* in [0-9.]* s: //')) vs pgbackrest restore --delta ${dtm} ms = $(awk -v a="$dtm" -v b="$tm" 'BEGIN { printf "%.0f %%", a / b * 100 }') of its full restore"
