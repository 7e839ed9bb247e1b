#!/usr/bin/env bash
# Restore drill RTO vs the same restore done by hand, in one run, on a ~1 GB pgbench database:
# a full backup, then WAL written after it (an update of a quarter of pgbench_accounts), all
# archived. Each round, interleaved:
#  - run_restore_drill(p_wait => true) to the end of the archive: its recorded RTO (start of the
#    restore to promotion), and separately its restore, replay and checks times;
#  - by hand: admin-toolkit restore --archive into an empty directory, then pg_ctl start on it
#    with the drill's server settings (no TCP, archiving off, hot_standby off, so the server
#    accepts connections only once promoted) and pg_isready polled every 50 ms, timed by this
#    script from the start of the restore to promotion.
# Target (issue #14): the drill's RTO <= 1.2x the hand-made restore + replay.
source "$(dirname "$0")/lib.sh"
rounds=${BENCH_ROUNDS:-3}
scale=${BENCH_SCALE:-68}
(cd "$BENCH_ROOT" && cargo build --release --locked -p admin-toolkit-cli >/dev/null 2>&1)
store=/tmp/admin_toolkit_bench_drill_store
rm -rf "$store"; mkdir -p "$store"/{backups,wal,drills,hand}
CLI=$store/admin-toolkit
cp "$BENCH_ROOT/target/release/admin-toolkit" "$CLI"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
bench_cluster drill 55446 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "archive_mode = on" "archive_library = 'admin_toolkit'" "admin_toolkit.archive_location = '$store/wal'" \
    "admin_toolkit.drill_directory = '$store/drills'" "admin_toolkit.cli_path = '$CLI'" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min" "shared_buffers = 1GB"
"$BIN/pgbench" -q -i -s "$scale" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres >/dev/null 2>&1
psql_bench -c "CREATE EXTENSION admin_toolkit" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
db_bytes=$(psql_bench -At -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
schedule=$(psql_bench -At -c "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) VALUES ('full', '0 3 * * 0', 7, '$store/backups', 3) RETURNING schedule_id")
backup_id=$(psql_bench -At -c "SELECT admin_toolkit.execute_backup($schedule, true)")
read -r full_path start_lsn < <(psql_bench -At -F' ' -c "SELECT backup_path, start_lsn FROM admin_toolkit.backup_history WHERE backup_id = $backup_id AND status = 'completed'")
[ -n "$full_path" ] || { echo "the backup failed" >&2; exit 1; }
accounts=$((scale * 100000))
psql_bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $((accounts / 4))" >/dev/null
last=$(psql_bench -At -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(psql_bench -At -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.5; done
wal_mb=$(psql_bench -At -c "SELECT (pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn') / 1e6)::int")
now_ms() { date +%s%3N; }

drill() { # -> "rto_ms restore_ms replay_ms checks_ms indexes tables"
    local id
    id=$(psql_bench -At -c "SELECT admin_toolkit.run_restore_drill(p_wait => true)")
    psql_bench -At -F' ' -c "SELECT round(rto_seconds * 1000), round(restore_seconds * 1000), round(wal_replay_seconds * 1000),
                                    round(checks_seconds * 1000), checks->>'indexes_checked', checks->>'tables_counted', status, failure_reason
                               FROM admin_toolkit.restore_drills WHERE drill_id = $id"
}
by_hand() { # -> "total_ms restore_ms"
    local data=$store/hand/data t0 t1 t2
    rm -rf "$data"
    t0=$(now_ms)
    as_pg "$CLI" restore --backup "$full_path" --target-dir "$data" --archive "$store/wal" 2>/dev/null
    t1=$(now_ms)
    # pg_ctl -w returns once the server is up in recovery ("standby" in postmaster.pid); with
    # hot_standby off, pg_isready answers only after promotion: poll it, as the drill polls.
    as_pg "$BIN/pg_ctl" -D "$data" -l "$store/hand/server.log" -W \
        -o "-c port=55447 -c listen_addresses='' -c unix_socket_directories=$store/hand -c archive_mode=off \
            -c hot_standby=off -c shared_buffers=128MB -c max_connections=10 -c autovacuum=off \
            -c shared_preload_libraries=''" start >/dev/null
    until "$BIN/pg_isready" -q -h "$store/hand" -p 55447; do
        [ -f "$data/postmaster.pid" ] || sleep 0.5
        [ -f "$data/postmaster.pid" ] || { echo "the restored server stopped: see $store/hand/server.log" >&2; exit 1; }
        sleep 0.05
    done
    t2=$(now_ms)
    [ "$(as_pg "$BIN/psql" -X -At -h "$store/hand" -p 55447 -U postgres -d postgres -c 'SELECT pg_is_in_recovery()')" = f ] \
        || { echo "pg_isready answered before promotion" >&2; exit 1; }
    as_pg "$BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo "$((t2 - t0)) $((t1 - t0))"
}
: >"$BENCH_DIR/rounds"
for _ in $(seq "$rounds"); do
    sync
    read -r rto rest replay checks indexes tables status reason < <(drill)
    [ "$status" = passed ] || { echo "the drill did not pass: $status $reason" >&2; exit 1; }
    sync
    read -r hand hand_restore < <(by_hand)
    echo "$rto $hand $rest $replay $checks $hand_restore $indexes $tables" | tee -a "$BENCH_DIR/rounds"
done
rto=$(column_median "$BENCH_DIR/rounds" 1); hand=$(column_median "$BENCH_DIR/rounds" 2)
rest=$(column_median "$BENCH_DIR/rounds" 3); replay=$(column_median "$BENCH_DIR/rounds" 4)
checks=$(column_median "$BENCH_DIR/rounds" 5); hand_restore=$(column_median "$BENCH_DIR/rounds" 6)
record "restore drill of a $((db_bytes / 1000000)) MB pgbench database (scale $scale) and the $wal_mb MB of WAL written after its full backup, to the end of the archive, median of $rounds, interleaved (bench/restore_drill.sh; target RTO <= 1.2x by hand)" \
    "drill RTO ${rto} ms (restore ${rest} ms + recovery to promotion ${replay} ms) vs by hand (admin-toolkit restore ${hand_restore} ms + pg_ctl start, pg_isready until promotion) ${hand} ms: $(awk -v a="$rto" -v b="$hand" 'BEGIN { printf "%.2f", a / b }')x; the drill's checks took ${checks} ms more (amcheck of $(awk 'NR == 1 { print $7 }' "$BENCH_DIR/rounds") B-tree indexes, row counts of $(awk 'NR == 1 { print $8 }' "$BENCH_DIR/rounds") tables)"
