#!/usr/bin/env bash
# Shared helpers of the benchmarks: a scratch PostgreSQL cluster per benchmark (run as the
# postgres OS user when invoked as root) of the server BENCH_PG_CONFIG names (default Debian's 15;
# e.g. BENCH_PG_CONFIG=$(sed -n 's/^pg18 = "\(.*\)"$/\1/p' ~/.pgrx/config.toml) for 18), A/B timing in one psql session, medians, and a dated
# row appended to docs/benchmarks.md. Source it; do not run it.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_PG_CONFIG=${BENCH_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BIN=$("$BENCH_PG_CONFIG" --bindir)
# The server's major version (15, 18…): some comparisons exist only on later majors.
PG_MAJOR=$("$BIN/postgres" --version | awk '{ print $3 }' | cut -d. -f1)
SEED_FILE=${SEED_FILE:-$BENCH_ROOT/../shared/seed/000_5bd05ca649ebdeaa.txt}
RESULTS=$BENCH_ROOT/docs/benchmarks.md

as_pg() { if [ "$(id -u)" = 0 ]; then sudo -n -u postgres -- "$@"; else "$@"; fi; }

# bench_cluster NAME PORT [postgresql.conf lines...]: a fresh cluster, started; sets BENCH_DIR.
bench_cluster() {
    local name=$1 port=$2; shift 2
    BENCH_DIR=/tmp/admin_toolkit_bench_$name
    BENCH_PORT=$port
    bench_stop
    rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$BENCH_DIR"
    as_pg "$BIN/initdb" -D "$BENCH_DIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$BENCH_DIR'"
        for line in "$@"; do echo "$line"; done
    } >>"$BENCH_DIR/data/postgresql.conf"
    as_pg "$BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w start >/dev/null
    trap bench_stop EXIT
}

bench_stop() {
    if [ -n "${BENCH_DIR:-}" ] && [ -f "$BENCH_DIR/data/postmaster.pid" ]; then
        as_pg "$BIN/pg_ctl" -D "$BENCH_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

psql_bench() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -d postgres "$@"; }

# load_seed SCHEMA FROM_PATTERN TO_PATTERN: runs the seed document's SQL between two lines
# (first matching FROM, up to but excluding the first matching TO) inside SCHEMA. Some of the
# seed's statements fail on PostgreSQL 15 (its *_partitioned tables); those errors are shown
# and the rest loads, as it would for someone running the document.
load_seed() {
    local schema=$1 from=$2 to=$3
    [ -f "$SEED_FILE" ] || { echo "seed document not found: $SEED_FILE (set SEED_FILE)" >&2; exit 1; }
    {
        echo "CREATE SCHEMA IF NOT EXISTS $schema; SET search_path = $schema, public;"
        awk -v from="$from" -v to="$to" 'index($0, from) { on = 1 } index($0, to) && on { exit } on' "$SEED_FILE" \
            | grep -v '^```'
    } | "$BIN/psql" -X -q -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -d postgres 2>&1 \
      | grep -E '^(psql:.*)?ERROR' | sed 's/^/seed (expected): /' >&2 || true
}

# ab_times N SQL_A SQL_B: runs A and B alternately N times in one session (A B A B ...), each
# its own transaction; prints "a_ms b_ms" per round. The session's search_path starts with the
# schema the seed's objects are loaded into, which its unqualified PL/pgSQL needs (admin_toolkit
# qualifies every name, so it is unaffected).
ab_times() {
    local n=$1 a=$2 b=$3
    {
        echo 'SET search_path = seed, public;'
        echo '\timing on'
        for _ in $(seq "$n"); do echo "$a"; echo "$b"; done
    } | psql_bench -o /dev/null 2>&1 | awk '/^Time:/ { t[i++] = $2 } END { for (j = 0; j + 1 < i; j += 2) print t[j], t[j+1] }'
}

# times N SQL: runs SQL N times in one session; prints one time (ms) per line.
times() {
    local n=$1 sql=$2
    { echo '\timing on'; for _ in $(seq "$n"); do echo "$sql"; done; } \
        | psql_bench -o /dev/null 2>&1 | awk '/^Time:/ { print $2 }'
}

# column_median FILE N: median of column N of an ab_times output file.
column_median() { awk -v c="$2" '{ print $c }' "$1" | median; }

# median: of the numbers on stdin (one per line).
median() { sort -g | awk '{ v[n++] = $1 } END { if (n == 0) print "nan"; else if (n % 2) print v[int(n/2)]; else print (v[n/2-1] + v[n/2]) / 2 }'; }

machine() { echo "$(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -m), PostgreSQL $("$BIN/postgres" --version | awk '{ print $3 }')"; }

# build: "admin_toolkit VERSION PROFILE COMMIT" of the library the bench cluster loads; the
# function is declared in pg_temp when the extension is not created there.
build() {
    psql_bench -At -F ' ' <<'SQL'
CREATE FUNCTION pg_temp.admin_toolkit_build() RETURNS TABLE (version text, git_commit text, build_profile text, built_for text)
    LANGUAGE c AS '$libdir/admin_toolkit', 'build_info_wrapper';
SELECT 'admin_toolkit', version, build_profile, git_commit FROM pg_temp.admin_toolkit_build();
SQL
}

# record BENCHMARK RESULT: appends a dated row to docs/benchmarks.md and echoes it. Refuses a
# row measured on anything but a release build.
record() {
    local built
    built=$(build | tail -n 1)
    case "$built" in
        *" release "*) ;;
        *) echo "bench: not recording \"$1\": the loaded admin_toolkit is not a release build ($built)" >&2; return 1 ;;
    esac
    local row="| $(date -u +%Y-%m-%d) | $1 | $2 | $(machine), $built |"
    if [ ! -f "$RESULTS" ]; then
        printf '# Benchmark results\n\nEach row is appended by a script under bench/ (see bench/README.md).\n\n| date | benchmark | result | machine |\n| --- | --- | --- | --- |\n' >"$RESULTS"
    fi
    echo "$row" >>"$RESULTS"
    echo "$row"
}

# Benchmarks measure the release build: install it unless told the right build is installed.
if [ -z "${ADMIN_TOOLKIT_BENCH_NO_INSTALL:-}" ]; then
    (cd "$BENCH_ROOT" && PATH="$HOME/.cargo/bin:$PATH" cargo pgrx install --release \
        --pg-config "$BENCH_PG_CONFIG" >/dev/null)
fi
