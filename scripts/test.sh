#!/usr/bin/env bash
# Runs every test of admin_toolkit: formatting and lints, the pure crate's unit tests, the
# #[pg_test]s inside a real server of each supported major (15, 16, 17, 18), then the client
# tests in pgrx-tests/ against real clusters started as the postgres OS user, on 15, 17 and 18
# (16's server from PyPI lacks the contrib modules they use). Version-independent steps run
# once. Needs the prerequisites (scripts/prereqs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A run builds everything once: incremental caches would only take disk (gigabytes of it).
export CARGO_INCREMENTAL=0
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
runas=()
[ "$(id -u)" = 0 ] && runas=(--runas postgres)

# Each step says when it began (minutes:seconds into the run): where CI's time goes.
step() { echo; printf '==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# Every runner's output also goes to a log, so the totals can be summed at the end.
log=$(mktemp /tmp/admin_toolkit_test.XXXXXX.log)
exec > >(tee "$log") 2>&1

step "cargo fmt --check"
cargo fmt --all --check

step "house rules: no import cycle in src/, the runtime imports no new feature"
python3 scripts/check-imports.py

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit tests (pure crate, CLI)"
cargo test --locked -p admin_toolkit_core -p admin-toolkit-cli --lib --bins --tests

# The majors: each is built and its #[pg_test]s run; the client tests run against 15 (Debian's
# server), 17 and 18 (unpacked from PyPI, with contrib); 16's server from PyPI has no contrib
# (amcheck, pg_stat_statements), so on 16 only the client tests that need none run. pgrx knows
# each major's pg_config (scripts/prereqs.sh registers them).
FULL_MAJORS=${ADMIN_TOOLKIT_TEST_MAJORS:-15 17 18}
BUILD_MAJORS=${ADMIN_TOOLKIT_BUILD_MAJORS:-16}
pg_config_of() {
    sed -n "s/^pg$1 = \"\(.*\)\"\$/\1/p" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"
}
for major in $FULL_MAJORS $BUILD_MAJORS; do
    [ -x "$(pg_config_of "$major")" ] || { echo "test: pgrx knows no PostgreSQL $major (run scripts/prereqs.sh)" >&2; exit 1; }
done

for major in $FULL_MAJORS $BUILD_MAJORS; do
    step "#[pg_test]s in a real PostgreSQL $major"
    pgdata=$(mktemp -d /tmp/admin_toolkit_pgtest.XXXXXX)
    rmdir "$pgdata" # cargo pgrx test creates it as the postgres user
    cargo pgrx test "pg$major" "${runas[@]}" --pgdata "$pgdata"
    rm -rf "$pgdata"
done

step "build the admin-toolkit CLI (restore_command of the recovery tests)"
cargo build --locked -p admin-toolkit-cli

# cargo pgrx test has just installed its debug build into the system PostgreSQL 15. The demo,
# the client tests and what this script leaves installed are a release build of this
# checkout: what the README promises, and what the demo cluster loads at its next restart.
step "install the release build into PostgreSQL 15"
cargo pgrx install --release --pg-config "$PG_CONFIG"

step "the demo: scripts/setup.sh in a scratch directory ends with a completed backup and a passed drill"
demo=$(mktemp -d /tmp/admin_toolkit_demo.XXXXXX)
chmod 755 "$demo"
demo_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADMIN_TOOLKIT_DEMO_DIR=$demo/demo ADMIN_TOOLKIT_DEMO_PORT=$demo_port ADMIN_TOOLKIT_CLI_DIR=$demo/bin \
    bash scripts/setup.sh
as_postgres=(); [ "$(id -u)" = 0 ] && as_postgres=(sudo -n -u postgres --)
"${as_postgres[@]}" "$("$PG_CONFIG" --bindir)/pg_ctl" -D "$demo/demo/data" -m fast -w stop >/dev/null
rm -rf "$demo"

step "build admin_toolkit 0.1.0 from commit e9c79f5 (pgrx-tests/tests/upgrade.rs upgrades it)"
ADMIN_TOOLKIT_0_1_0=$(bash scripts/build-0.1.0.sh | tail -1)
export ADMIN_TOOLKIT_0_1_0

step "build the Debian packages: the program's and one per major (pgrx-tests/tests/package.rs)"
ADMIN_TOOLKIT_DEBS=$(mktemp -d /tmp/admin_toolkit_debs.XXXXXX)
chmod 755 "$ADMIN_TOOLKIT_DEBS"
export ADMIN_TOOLKIT_DEBS
for what in cli $FULL_MAJORS $BUILD_MAJORS; do
    bash scripts/package.sh "$what" "$ADMIN_TOOLKIT_DEBS" | tail -1
done

# The installed build must be the release build of this commit (see pgrx-tests/tests/build.rs).
export ADMIN_TOOLKIT_EXPECT_PROFILE=release
ADMIN_TOOLKIT_EXPECT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
export ADMIN_TOOLKIT_EXPECT_COMMIT
# The tests that need contrib modules (amcheck for drills, pg_stat_statements): skipped on the
# majors whose server here has none (16).
NEEDS_CONTRIB=(a_restart_only_change_becomes_applied_after_the_restart
    each_fault_fails_the_drill_with_its_reason a_clean_drill_of_a_chain_records_the_rows_at_the_target
    a_hostile_restored_catalog_never_steers_a_drill_and_cannot_fail_it
    slow_queries_without_pg_stat_statements_is_a_clear_55000 views_and_query_metric_with_pg_stat_statements
    encrypted_backups_and_wal_on_s3_need_their_key_and_hold_no_plaintext
    a_cluster_with_two_tablespaces_is_backed_up_restored_elsewhere_and_drilled)
# 15 last: the release build for Debian's server is what this script leaves installed.
failed_majors=()
for major in $(printf '%s\n' $BUILD_MAJORS $FULL_MAJORS | sort -rn); do
    pg_config=$(pg_config_of "$major")
    skip=()
    # Installing the package is for Debian's own server (postgresql-15) only.
    [ "$major" = 15 ] || skip+=(--skip the_debian_package_installs)
    if [[ " $BUILD_MAJORS " == *" $major "* ]]; then
        step "client tests against real PostgreSQL $major clusters, but those needing contrib"
        for t in "${NEEDS_CONTRIB[@]}"; do skip+=(--skip "$t"); done
    else
        step "client tests against real PostgreSQL $major clusters"
    fi
    [ "$major" = 15 ] || cargo pgrx install --release --pg-config "$pg_config"
    # A failing major does not stop the others: every major is tested, the run fails at the end.
    PG_BINDIR=$("$pg_config" --bindir) \
        cargo test --locked --no-fail-fast -p admin_toolkit_it --tests -- \
        --test-threads="${ADMIN_TOOLKIT_TEST_THREADS:-4}" "${skip[@]}" || failed_majors+=("$major")
done
rm -rf "$ADMIN_TOOLKIT_DEBS"
echo
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?/) p += $i; if ($(i+1) ~ /^failed;?/) f += $i } }
     END { printf "admin_toolkit: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
if [ ${#failed_majors[@]} -gt 0 ]; then
    echo "admin_toolkit: client tests failed on PostgreSQL ${failed_majors[*]}" >&2
    exit 1
fi
