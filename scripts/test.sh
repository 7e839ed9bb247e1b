#!/usr/bin/env bash
# Runs every test of admin_toolkit: formatting and lints, the pure crate's unit tests, the
# #[pg_test]s inside a real server, then the client tests in pgrx-tests/ against real clusters
# started as the postgres OS user. Needs the prerequisites (scripts/prereqs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A run builds everything once: incremental caches would only take disk (gigabytes of it).
export CARGO_INCREMENTAL=0
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
runas=()
[ "$(id -u)" = 0 ] && runas=(--runas postgres)

step() { echo; echo "==> $*"; }

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

step "#[pg_test]s in a real PostgreSQL 15"
pgdata=$(mktemp -d /tmp/admin_toolkit_pgtest.XXXXXX)
rmdir "$pgdata" # cargo pgrx test creates it as the postgres user
cargo pgrx test pg15 "${runas[@]}" --pgdata "$pgdata"
rm -rf "$pgdata"

# cargo pgrx test has just installed its debug build into the system PostgreSQL 15. The client
# tests run against, and this script leaves installed, a release build of this checkout: what
# the README promises, and what the demo cluster loads at its next restart.
step "install the release build into PostgreSQL 15"
cargo pgrx install --release --pg-config "$PG_CONFIG"

step "build the admin-toolkit CLI (restore_command of the recovery tests)"
cargo build --locked -p admin-toolkit-cli

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

step "build the Debian package (installed and removed by pgrx-tests/tests/package.rs)"
ADMIN_TOOLKIT_DEB=$(bash scripts/package.sh | tail -1)
export ADMIN_TOOLKIT_DEB

step "client tests against real clusters"
# The installed build must be the release build of this commit (see pgrx-tests/tests/build.rs).
ADMIN_TOOLKIT_EXPECT_PROFILE=release ADMIN_TOOLKIT_EXPECT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) \
    cargo test --locked --no-fail-fast -p admin_toolkit_it --tests -- --test-threads="${ADMIN_TOOLKIT_TEST_THREADS:-4}"
echo
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?/) p += $i; if ($(i+1) ~ /^failed;?/) f += $i } }
     END { printf "admin_toolkit: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
