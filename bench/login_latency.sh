#!/usr/bin/env bash
# Time per login (pgbench -C: one new scram-sha-256 connection over TCP per transaction of
# `SELECT 1`) with admin_toolkit preloaded, against the library not loaded, in one run: one
# cluster restarted into each configuration in turn, rounds interleaved. Configurations: not
# loaded; admin_toolkit with its defaults (login auditing on, lockout off); admin_toolkit with
# the lockout and password history on (max_auth_failures = 5, password_reuse_history = 5), and
# the same with login auditing off (what the lockout's hook costs by itself).
# Target: <= 100 us added per login. BENCH_SECONDS per pgbench run, BENCH_ROUNDS rounds.
# A login takes ~10 ms here, varying by a millisecond from run to run: on PostgreSQL 18 the
# server's own measure of each login's authentication (log_connections = 'setup_durations',
# which times ClientAuthentication and so the toolkit's hooks) is recorded beside it, the
# median of every login of every round.
source "$(dirname "$0")/lib.sh"
seconds=${BENCH_SECONDS:-15}
rounds=${BENCH_ROUNDS:-5}
clients=${BENCH_CLIENTS:-1}
# BENCH_AUTH=trust leaves out SCRAM's own ~5 ms (and its variance), so that what the hooks add
# stands out.
auth=${BENCH_AUTH:-scram-sha-256}
timed=()
[ "$PG_MAJOR" -ge 18 ] && timed=("log_connections = 'setup_durations'")
bench_cluster login_latency 55437 "max_connections = 50" "password_encryption = 'scram-sha-256'" \
    "checkpoint_timeout = 1h" "${timed[@]}"
hba=$BENCH_DIR/data/pg_hba.conf
as_pg sh -c "{ echo 'host all bench 127.0.0.1/32 $auth'; cat '$hba'; } > '$hba.new' && mv '$hba.new' '$hba'"
conf=$BENCH_DIR/data/postgresql.auto.conf
configure() {
    as_pg "$BIN/pg_ctl" -D "$BENCH_DIR/data" -m fast -w stop >/dev/null
    case $1 in
        none) echo "shared_preload_libraries = ''" >"$conf" ;;
        admin_toolkit) echo "shared_preload_libraries = 'admin_toolkit'" >"$conf" ;;
        lockout) printf "%s\n" "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.max_auth_failures = 5" \
                     "admin_toolkit.password_reuse_history = 5" >"$conf" ;;
        lockout_unaudited) printf "%s\n" "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.max_auth_failures = 5" \
                     "admin_toolkit.password_reuse_history = 5" "admin_toolkit.audit_logins = off" >"$conf" ;;
    esac
    as_pg "$BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w start >/dev/null
}
configure admin_toolkit
psql_bench -c "CREATE EXTENSION admin_toolkit" -c "CREATE ROLE bench LOGIN PASSWORD 'Login-Timing-Passw0rd!'"
echo "SELECT 1;" >"$BENCH_DIR/select1.sql"
chmod 644 "$BENCH_DIR/select1.sql"
# Microseconds per transaction, each a new connection: clients / TPS.
per_login() {
    PGPASSWORD='Login-Timing-Passw0rd!' "$BIN/pgbench" -n -C -f "$BENCH_DIR/select1.sql" -c "$clients" -j "$clients" \
        -T "$1" -h 127.0.0.1 -p "$BENCH_PORT" -U bench postgres 2>/dev/null \
        | awk -v c="$clients" '/^tps/ { printf "%.1f\n", 1e6 * c / $3; exit }'
}
: >"$BENCH_DIR/us"
: >"$BENCH_DIR/auth_us"
for _ in $(seq "$rounds"); do
    for config in none admin_toolkit lockout lockout_unaudited; do
        configure "$config"
        # Warm-up, not counted: the first seconds after a start (caches, the worker's first
        # pass) are slower for every configuration.
        per_login 3 >/dev/null
        from=$(stat -c %s "$BENCH_DIR/server.log")
        echo "$config $(per_login "$seconds")" >>"$BENCH_DIR/us"
        tail -c +"$((from + 1))" "$BENCH_DIR/server.log" \
            | sed -n 's/.*connection ready: .*authentication=\([0-9.]*\) ms.*/\1/p' \
            | awk -v c="$config" '{ print c, $1 * 1000 }' >>"$BENCH_DIR/auth_us"
    done
done
configure admin_toolkit
logins=$(psql_bench -Atc "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'LOGIN' AND username = 'bench'")
med() { awk -v c="$1" '$1 == c { print $2 }' "$BENCH_DIR/us" | median; }
none=$(med none); ours=$(med admin_toolkit); lock=$(med lockout); bare=$(med lockout_unaudited)
record "time per login, pgbench -C, SELECT 1, $auth over TCP, $clients clients, ${seconds} s x $rounds rounds, medians (target: <= 100 us added)" \
       "not loaded $none us; admin_toolkit (login auditing) $ours us ($(awk -v a="$ours" -v b="$none" 'BEGIN { printf "%+.0f", a - b }') us); with lockout and password history on $lock us ($(awk -v a="$lock" -v b="$none" 'BEGIN { printf "%+.0f", a - b }') us); lockout on, login auditing off $bare us ($(awk -v a="$bare" -v b="$none" 'BEGIN { printf "%+.0f", a - b }') us); $logins logins audited"
if [ -s "$BENCH_DIR/auth_us" ]; then
    amed() { awk -v c="$1" '$1 == c { print $2 }' "$BENCH_DIR/auth_us" | median; }
    n=$(wc -l <"$BENCH_DIR/auth_us")
    anone=$(amed none); aours=$(amed admin_toolkit); alock=$(amed lockout); abare=$(amed lockout_unaudited)
    record "authentication time per login as the server measures it (log_connections = setup_durations), $auth, median of $n logins over $rounds rounds (target: <= 100 us added)" \
           "not loaded $anone us; admin_toolkit (login auditing) $aours us ($(awk -v a="$aours" -v b="$anone" 'BEGIN { printf "%+.0f", a - b }') us); with lockout and password history on $alock us ($(awk -v a="$alock" -v b="$anone" 'BEGIN { printf "%+.0f", a - b }') us); lockout on, login auditing off $abare us ($(awk -v a="$abare" -v b="$anone" 'BEGIN { printf "%+.0f", a - b }') us)"
fi
