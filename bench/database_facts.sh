#!/usr/bin/env bash
# Cost of collecting every database's maintenance facts: BENCH_DATABASES (20) databases of
# BENCH_TABLES (200) tables each (a primary key and one more index per table, a few rows), the
# worker collecting every BENCH_INTERVAL (5) seconds, BENCH_ROUNDS (10) rounds. Per database:
# the job's catalog reading and choosing (collect_ms), the job from its start to its exit as the
# worker sees it, fork and connection included (job_ms), the worker's writing of the facts
# (ingest_ms); per round, their sum over all databases; and how many collections each database
# had (one connection per database per round means exactly one per round).
# Target (issue #15): <= 20 ms per database, no more than one connection per database per interval.
source "$(dirname "$0")/lib.sh"
databases=${BENCH_DATABASES:-20}
tables=${BENCH_TABLES:-200}
interval=${BENCH_INTERVAL:-5}
rounds=${BENCH_ROUNDS:-10}
bench_cluster facts 55456 "shared_preload_libraries = 'admin_toolkit'" "admin_toolkit.collection_interval = 0" \
    "admin_toolkit.database_facts_interval = 0" "max_locks_per_transaction = 1024"
for d in $(seq "$databases"); do
    psql_bench -c "CREATE DATABASE bench_$d" >/dev/null
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -d "bench_$d" -c "
        DO \$\$ BEGIN
          FOR i IN 1..$tables LOOP
            EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i);
            EXECUTE format('CREATE INDEX ON t%s (v)', i);
            EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, 20) g', i);
          END LOOP;
        END \$\$" -c "ANALYZE" >/dev/null
done
psql_bench -c "CREATE EXTENSION admin_toolkit" >/dev/null
psql_bench -c "ALTER SYSTEM SET admin_toolkit.database_facts_interval = $interval" -c "SELECT pg_reload_conf()" >/dev/null
# Every collection of every database is sampled (a database's row changes once per round): the
# figures are medians over rounds 2..BENCH_ROUNDS (the first round also builds each database's
# relation cache file), not one round's.
psql_bench -c "CREATE TABLE bench_samples (database name, collections int, job_ms numeric, collect_ms numeric,
                 ingest_ms numeric, PRIMARY KEY (database, collections))" >/dev/null
sample() {
    psql_bench -c "INSERT INTO bench_samples SELECT database, collections, job_ms, collect_ms, ingest_ms
                     FROM admin_toolkit.database_facts WHERE ingest_ms IS NOT NULL ON CONFLICT DO NOTHING" >/dev/null
}
started=$(date +%s)
total=$((databases + 1))
until [ "$(psql_bench -At -c "SELECT count(*) FILTER (WHERE collections >= $rounds) FROM admin_toolkit.database_facts")" = "$total" ]; do
    sample
    sleep 0.5
    [ $(($(date +%s) - started)) -lt $((interval * (rounds + 3))) ] || { echo "the rounds did not complete" >&2; exit 1; }
done
sample
elapsed=$(($(date +%s) - started))
read -r tables_seen samples job_med job_max collect_med ingest_med per_db round_med min_c max_c < <(psql_bench -At -F' ' -c "
    WITH s AS (SELECT * FROM bench_samples WHERE collections BETWEEN 2 AND $rounds),
    rounds AS (SELECT collections, sum(job_ms + ingest_ms) AS total FROM s GROUP BY collections)
    SELECT (SELECT count(*) FROM admin_toolkit.database_table_facts), (SELECT count(*) FROM s),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY job_ms))::numeric, 1), round(max(job_ms), 1),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY collect_ms))::numeric, 1),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ingest_ms))::numeric, 1),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY job_ms + ingest_ms))::numeric, 1),
           (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY total))::numeric, 1) FROM rounds),
           (SELECT min(collections) FROM admin_toolkit.database_facts), (SELECT max(collections) FROM admin_toolkit.database_facts)
      FROM s")
record "facts of every database: $databases databases x $tables tables (+ postgres), collected every $interval s, medians over rounds 2 to $rounds (bench/database_facts.sh; target <= 20 ms per database, one connection per database per interval)" \
    "per database: $per_db ms = job $job_med ms (fork, connection, reading the catalogs $collect_med ms, exit; max $job_max ms) + worker ingest $ingest_med ms ($samples collections); per round: $round_med ms for $total databases, $tables_seen tables; collections per database after ${elapsed} s: $min_c to $max_c (one job, hence one connection, per database per round)"
