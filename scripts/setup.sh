#!/usr/bin/env bash
# From a fresh Debian 12 machine with a Rust toolchain to a PostgreSQL 15 cluster with
# admin_toolkit doing its main job: build prerequisites, the extension and the admin-toolkit
# program built and installed, a scratch cluster whose WAL the toolkit archives, the sample
# schedules, then one full backup and one restore drill of it, run before your eyes.
#
#   ADMIN_TOOLKIT_DEMO_DIR  where the scratch cluster lives   (default /tmp/admin_toolkit_demo)
#   ADMIN_TOOLKIT_DEMO_PORT its port on 127.0.0.1             (default 5433)
#   ADMIN_TOOLKIT_CLI_DIR   where admin-toolkit is installed  (default /usr/local/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
DIR=${ADMIN_TOOLKIT_DEMO_DIR:-/tmp/admin_toolkit_demo}
PORT=${ADMIN_TOOLKIT_DEMO_PORT:-5433}
CLI_DIR=${ADMIN_TOOLKIT_CLI_DIR:-/usr/local/bin}
DATA=$DIR/data
CLI=$CLI_DIR/admin-toolkit

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# PostgreSQL refuses to run as root: run the server as the postgres OS user then.
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -n -u postgres -- "$@"; else "$@"; fi; }

# The toolchain is the one thing this script does not install: say exactly what to do.
need_rust() {
    echo "setup: a Rust toolchain 1.82 or newer is needed ($1). Install it with rustup:" >&2
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    echo "  . \"\$HOME/.cargo/env\"   # then run this script again" >&2
    echo "(Debian 12's own rustc is 1.63, too old for pgrx 0.18.)" >&2
    exit 1
}
command -v cargo >/dev/null 2>&1 || need_rust "cargo is not on PATH"
rust=$(rustc --version | awk '{print $2}')
[ "$(printf '%s\n%s\n' 1.82.0 "$rust" | sort -V | head -1)" = 1.82.0 ] || need_rust "found rustc $rust"

bash scripts/prereqs.sh --build
BIN=$("$PG_CONFIG" --bindir)

echo "==> building and installing admin_toolkit (release)"
if [ "$(id -u)" = 0 ]; then
    cargo pgrx install --release --pg-config "$PG_CONFIG"
else
    cargo pgrx install --sudo --release --pg-config "$PG_CONFIG"
fi
echo "==> building admin-toolkit (restore, wal-get, verify) into $CLI"
cargo build --release --locked -p admin-toolkit-cli
as_root install -D -m 755 target/release/admin-toolkit "$CLI"

as_root mkdir -p "$DIR"
as_root chown postgres:postgres "$DIR"
as_pg mkdir -p "$DIR/backups/wal" "$DIR/drills"
if [ ! -f "$DATA/PG_VERSION" ]; then
    echo "==> creating a scratch cluster in $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 >/dev/null
fi
# The demo's settings, rewritten at every run (an older demo directory gets them too).
as_pg tee "$DATA/admin_toolkit_demo.conf" >/dev/null <<CONF
# admin_toolkit demo cluster (written by scripts/setup.sh at every run)
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'admin_toolkit'
admin_toolkit.database = 'postgres'
admin_toolkit.collection_interval = 10
# WAL archived by the toolkit: what backups, recovery and drills read.
archive_mode = on
archive_library = 'admin_toolkit'
admin_toolkit.archive_location = '$DIR/backups/wal'
# Restore drills: where they restore, and the program their recovery runs.
admin_toolkit.drill_directory = '$DIR/drills'
admin_toolkit.cli_path = '$CLI'
CONF
grep -qs "^include_if_exists = 'admin_toolkit_demo.conf'" "$DATA/postgresql.conf" ||
    echo "include_if_exists = 'admin_toolkit_demo.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    echo "==> restarting the cluster to load the new build"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w restart >/dev/null
else
    echo "==> starting the cluster"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w start >/dev/null
fi

PSQL=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" -c "CREATE EXTENSION IF NOT EXISTS admin_toolkit" \
             -v backup_root="$DIR/backups" -f demo/sample_schedules.sql

echo "==> a full backup (the sample weekly schedule, run now), then a restore drill of it"
"${PSQL[@]}" -At -c "SELECT admin_toolkit.execute_backup(schedule_id, true)
                       FROM admin_toolkit.backup_schedules WHERE backup_type = 'full'
                      ORDER BY schedule_id LIMIT 1" >/dev/null
"${PSQL[@]}" -At -c "SELECT admin_toolkit.run_restore_drill(NULL, NULL, true)" >/dev/null
backup=$("${PSQL[@]}" -At -c "SELECT backup_id || ' ' || status || coalesce(': ' || error_message, '')
                                 FROM admin_toolkit.backup_history WHERE backup_type = 'full'
                                ORDER BY backup_id DESC LIMIT 1")
drill=$("${PSQL[@]}" -At -c "SELECT drill_id || ' ' || status || coalesce(': ' || failure_reason, '')
                                || ' (RTO ' || coalesce(round(rto_seconds::numeric, 1)::text, '-') || ' s)'
                               FROM admin_toolkit.restore_drills ORDER BY drill_id DESC LIMIT 1")
echo "    backup $backup"
echo "    drill  $drill"
backup_path=$("${PSQL[@]}" -At -c "SELECT backup_path FROM admin_toolkit.backup_history
                                     WHERE status = 'completed' ORDER BY backup_id DESC LIMIT 1")
case "$backup $drill" in
    *" completed "*" passed "*) ;;
    *) echo "setup: the demo's backup or drill did not succeed; see $DIR/server.log" >&2; exit 1 ;;
esac

cat <<TOUR

admin_toolkit is running on PostgreSQL 15 at 127.0.0.1:$PORT (data: $DATA, log: $DIR/server.log).
WAL is archived into $DIR/backups/wal; backups go under $DIR/backups; admin-toolkit is $CLI.

Connect:   $BIN/psql -h 127.0.0.1 -p $PORT -U postgres

A short tour:
  SELECT backup_id, backup_type, status, backup_path FROM admin_toolkit.backup_history;
  SELECT drill_id, status, rto_seconds, rpo_seconds FROM admin_toolkit.restore_drills;
  SELECT p.* FROM admin_toolkit.backup_history h,         -- which backup and WAL a recovery
         admin_toolkit.plan_recovery(h.end_time) p         -- to the end of the last backup needs
   WHERE h.status = 'completed' ORDER BY h.backup_id DESC LIMIT 1;
  SELECT * FROM admin_toolkit.backup_schedules;            -- the sample schedules
  SELECT rule_name, severity FROM admin_toolkit.alert_rules;   -- the built-in alert rules
  SELECT * FROM admin_toolkit.process_alerts();            -- alerts that hold now
  SELECT * FROM admin_toolkit.execute_maintenance(2);      -- a real ANALYZE, run by a job worker
  SELECT * FROM admin_toolkit.get_config_recommendations();
  SELECT * FROM admin_toolkit.security_audit_log ORDER BY event_time DESC LIMIT 10;

Restore the backup into a new directory and start it beside the demo (as the postgres user):
  $CLI restore --backup $backup_path \\
      --target-dir $DIR/restored --archive $DIR/backups/wal
  $BIN/pg_ctl -D $DIR/restored -l $DIR/restored.log start; $BIN/psql -h $DIR/restored -d postgres

Stop:      $( [ "$(id -u)" = 0 ] && echo "sudo -u postgres ")$BIN/pg_ctl -D $DATA stop
TOUR
