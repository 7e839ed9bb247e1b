#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a PostgreSQL 15 cluster with admin_toolkit
# preloaded and created: prerequisites, build, install, a scratch cluster, sample schedules.
#
#   ADMIN_TOOLKIT_DEMO_DIR  where the scratch cluster lives   (default /tmp/admin_toolkit_demo)
#   ADMIN_TOOLKIT_DEMO_PORT its port on 127.0.0.1             (default 5433)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
BIN=$("$PG_CONFIG" --bindir)
DIR=${ADMIN_TOOLKIT_DEMO_DIR:-/tmp/admin_toolkit_demo}
PORT=${ADMIN_TOOLKIT_DEMO_PORT:-5433}
DATA=$DIR/data

bash scripts/prereqs.sh
echo "==> building and installing admin_toolkit (release)"
cargo pgrx install --release --pg-config "$PG_CONFIG"

# PostgreSQL refuses to run as root: run the server as the postgres OS user then.
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -n -u postgres -- "$@"; else "$@"; fi; }

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
if [ ! -f "$DATA/PG_VERSION" ]; then
    echo "==> creating a scratch cluster in $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 >/dev/null
    cat >>"$DATA/postgresql.conf" <<CONF

# admin_toolkit demo cluster
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'admin_toolkit'
admin_toolkit.database = 'postgres'
admin_toolkit.collection_interval = 10
CONF
fi
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

cat <<TOUR

admin_toolkit is running on PostgreSQL 15 at 127.0.0.1:$PORT (data: $DATA, log: $DIR/server.log).

Connect:   $BIN/psql -h 127.0.0.1 -p $PORT -U postgres

A short tour:
  \\dt admin_toolkit.*                                   -- the catalog
  SELECT backend_type, datname FROM pg_stat_activity
   WHERE backend_type LIKE 'admin_toolkit%';            -- launcher, worker, jobs
  SELECT * FROM admin_toolkit.validate_password_policy('alice', 'Tr0ub4dor&3-long');
  SELECT * FROM admin_toolkit.backup_schedules;          -- sample schedules
  SELECT * FROM admin_toolkit.alert_rules;               -- the five default alert rules
  SELECT * FROM admin_toolkit.maintain_partitions();     -- partition upkeep (the worker does it too)
  SELECT * FROM admin_toolkit.process_alerts();          -- alerts that hold now (LISTEN admin_toolkit_alerts)
  SELECT * FROM admin_toolkit.execute_maintenance(2);    -- a real ANALYZE, run top-level by a job worker
  SELECT * FROM admin_toolkit.check_maintenance_health();
  SELECT * FROM admin_toolkit.get_config_recommendations();
  SELECT * FROM admin_toolkit.security_audit_log ORDER BY event_time DESC LIMIT 10;

Stop:      $( [ "$(id -u)" = 0 ] && echo "sudo -u postgres ")$BIN/pg_ctl -D $DATA stop
TOUR
