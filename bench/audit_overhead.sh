#!/usr/bin/env bash
# pgbench TPS with admin_toolkit preloaded and all auditing on (DDL, logins, table reads),
# against the library not loaded and against pgaudit (pgaudit.log = 'ddl, role'), in one run:
# one cluster restarted into each configuration in turn, rounds interleaved. Workloads: TPC-B,
# select-only, and DDL only (COMMENT ON, each one audited): for it, the audit rows written are
# counted against the statements run (nothing may be lost). Target: our overhead <= 3 %, never
# worse than pgaudit. BENCH_SECONDS per pgbench run, BENCH_ROUNDS rounds.
source "$(dirname "$0")/lib.sh"
seconds=${BENCH_SECONDS:-15}
rounds=${BENCH_ROUNDS:-5}
clients=${BENCH_CLIENTS:-2}
if ! dpkg-query -W -f='${Status}' postgresql-15-pgaudit 2>/dev/null | grep -q "install ok installed"; then
    apt-get install -y -qq postgresql-15-pgaudit >/dev/null
fi
# No checkpoint may fall inside a run: on 2 cores one costs ~10 % of a 15 s TPC-B run.
bench_cluster audit_overhead 55435 "max_connections = 50" "shared_buffers = 512MB" "max_wal_size = 20GB" \
    "checkpoint_timeout = 1h"
conf=$BENCH_DIR/data/postgresql.auto.conf
configure() {
    as_pg "$BIN/pg_ctl" -D "$BENCH_DIR/data" -m fast -w stop >/dev/null
    case $1 in
        none) echo "shared_preload_libraries = ''" >"$conf" ;;
        admin_toolkit) printf "%s\n" "shared_preload_libraries = 'admin_toolkit'" \
                           "admin_toolkit.audit_ddl = on" "admin_toolkit.audit_logins = on" "admin_toolkit.audit_reads = on" >"$conf" ;;
        pgaudit) printf "%s\n" "shared_preload_libraries = 'pgaudit'" "pgaudit.log = 'ddl, role'" >"$conf" ;;
    esac
    as_pg "$BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w start >/dev/null
}
configure admin_toolkit
psql_bench -c "CREATE EXTENSION admin_toolkit"
"$BIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres >/dev/null 2>&1
tps() { psql_bench -c "CHECKPOINT" >/dev/null; "$BIN/pgbench" -n "$@" -c "$clients" -j "$clients" -T "$seconds" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres postgres 2>/dev/null \
        | tee "$BENCH_DIR/last_run" | awk '/^tps/ { print $3; exit }'; }
echo "COMMENT ON TABLE pgbench_branches IS 'audited';" >"$BENCH_DIR/ddl.sql"
chmod 644 "$BENCH_DIR/ddl.sql"
ddl_statements=0
: >"$BENCH_DIR/tps"
for _ in $(seq "$rounds"); do
    for config in none admin_toolkit pgaudit; do
        configure "$config"
        echo "$config tpcb $(tps)" >>"$BENCH_DIR/tps"
        echo "$config select $(tps -S)" >>"$BENCH_DIR/tps"
        echo "$config ddl $(tps -f "$BENCH_DIR/ddl.sql")" >>"$BENCH_DIR/tps"
        if [ "$config" = admin_toolkit ]; then
            n=$(awk '/number of transactions actually processed/ { print $NF; exit }' "$BENCH_DIR/last_run")
            n=${n%%/*}
            ddl_statements=$((ddl_statements + n))
            # Written before the restart into the next configuration: the worker writes the
            # journal through at a clean shutdown, or after the restart from the slot.
        fi
    done
done
# Every COMMENT run under admin_toolkit is in the log (those of the other configurations were
# not audited: the library was not loaded).
configure admin_toolkit
rows=0
for _ in $(seq 120); do
    rows=$(psql_bench -Atc "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'COMMENT' AND object_name = 'pgbench_branches'")
    [ "$rows" -ge "$ddl_statements" ] && break
    sleep 1
done
gaps=$(psql_bench -Atc "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'AUDIT_GAP'")
med() { awk -v c="$1" -v w="$2" '$1 == c && $2 == w { print $3 }' "$BENCH_DIR/tps" | median; }
for workload in tpcb select ddl; do
    none=$(med none $workload); ours=$(med admin_toolkit $workload); pga=$(med pgaudit $workload)
    ours_pct=$(awk -v a="$ours" -v b="$none" 'BEGIN { printf "%+.1f", 100 * (a - b) / b }')
    pga_pct=$(awk -v a="$pga" -v b="$none" 'BEGIN { printf "%+.1f", 100 * (a - b) / b }')
    record "pgbench $workload TPS, scale 10, $clients clients, ${seconds} s x $rounds rounds, medians (target: overhead <= 3 %, never worse than pgaudit)" \
           "not loaded $none; admin_toolkit (DDL, login, read auditing) $ours (${ours_pct} %); pgaudit ddl,role $pga (${pga_pct} %)"
done
ddl_tps=$(med admin_toolkit ddl)
record "audit events sustained: COMMENT ON via pgbench, $clients clients, ${seconds} s x $rounds rounds (audit journal in WAL)" \
       "$ddl_statements statements, $rows audit rows ($ddl_tps events/s median), AUDIT_GAP events: $gaps"
