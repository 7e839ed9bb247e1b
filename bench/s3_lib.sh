#!/usr/bin/env bash
# Shared by the S3 benchmarks: an S3-compatible server on 127.0.0.1 over TLS with a private CA
# (pgBackRest speaks to S3 over TLS only), a bucket, credentials, and a pgBackRest configuration
# for it. The server is moto on plain HTTP behind nginx for TLS: moto's own TLS ends connections
# without a TLS close_notify, which OpenSSL 3 (pgBackRest) refuses as "unexpected eof". Both
# tools go through the same nginx. Source after lib.sh, with $store set; sets S3_PORT, CA,
# CREDENTIALS.
venv=/opt/admin_toolkit-test/venv
command -v pgbackrest >/dev/null || { echo "pgbackrest is missing: run scripts/prereqs.sh" >&2; exit 1; }
mkdir -p "$store"/{certs,pgbr/log,pgbr/lock}
certs=$store/certs
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$certs/ext"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$certs/ca.key" -out "$certs/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$certs/server.key" -out "$certs/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial \
    -out "$certs/server.pem" -days 2 -extfile "$certs/ext" 2>/dev/null
CA=$certs/ca.pem
S3_PORT=${S3_PORT:-55490}
moto_port=$((S3_PORT + 1))
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$store/moto.log" 2>&1 &
moto_pid=$!
mkdir -p "$store/nginx-tmp"; chmod 777 "$store/nginx-tmp"
cat >"$store/nginx.conf" <<CONF
worker_processes 2;
pid $store/nginx.pid;
error_log $store/nginx-error.log;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path $store/nginx-tmp/body;
    proxy_temp_path $store/nginx-tmp/proxy;
    fastcgi_temp_path $store/nginx-tmp/fastcgi;
    uwsgi_temp_path $store/nginx-tmp/uwsgi;
    scgi_temp_path $store/nginx-tmp/scgi;
    client_max_body_size 0;
    server {
        listen 127.0.0.1:$S3_PORT ssl;
        ssl_certificate $certs/server.pem;
        ssl_certificate_key $certs/server.key;
        location / {
            proxy_pass http://127.0.0.1:$moto_port;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }
    }
}
CONF
nginx -c "$store/nginx.conf"
stop_all() {
    kill "$moto_pid" 2>/dev/null || true
    [ -f "$store/nginx.pid" ] && kill "$(cat "$store/nginx.pid")" 2>/dev/null || true
    bench_stop
}
trap stop_all EXIT
until "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $moto_port))" 2>/dev/null; do sleep 0.2; done
s3_key=bench-key; s3_secret=bench-secret
CREDENTIALS=$store/credentials
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$s3_key" "$s3_secret" >"$CREDENTIALS"

# s3py CODE [ARGS]: python with boto3 (`s3`) against the server.
s3py() {
    AWS_ACCESS_KEY_ID=$s3_key AWS_SECRET_ACCESS_KEY=$s3_secret AWS_DEFAULT_REGION=us-east-1 \
        "$venv/bin/python" -c "import boto3, sys; s3 = boto3.client('s3', endpoint_url='https://127.0.0.1:$S3_PORT', verify='$CA'); $1" "${@:2}"
}
s3py "s3.create_bucket(Bucket='bench')"
# s3_bytes PREFIX: the sum of the sizes of the objects under PREFIX.
s3_bytes() { s3py "print(sum(o['Size'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket='bench', Prefix=sys.argv[1]) for o in p.get('Contents', [])))" "$1"; }

# The admin_toolkit settings for s3://bench/...
s3_settings() {
    echo "admin_toolkit.s3_endpoint = 'https://127.0.0.1:$S3_PORT'"
    echo "admin_toolkit.s3_force_path_style = on"
    echo "admin_toolkit.s3_credentials_file = '$CREDENTIALS'"
    echo "admin_toolkit.s3_ca_file = '$CA'"
}

# pgbackrest_config: pgBackRest on the same bucket (repo path /pgbackrest), for the bench cluster.
pgbackrest_config() {
    cat >"$store/pgbackrest.conf" <<CONF
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=bench
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$S3_PORT
repo1-s3-region=us-east-1
repo1-s3-key=$s3_key
repo1-s3-key-secret=$s3_secret
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
process-max=2
repo1-bundle=y
compress-type=zst
compress-level=3
start-fast=y
archive-check=n
log-level-console=error
log-level-file=off
lock-path=$store/pgbr/lock
log-path=$store/pgbr/log

[bench]
pg1-path=$BENCH_DIR/data
pg1-port=$BENCH_PORT
pg1-socket-path=$BENCH_DIR
pg1-user=postgres
CONF
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$store"
    return 0
}
pgbr() { as_pg pgbackrest --config="$store/pgbackrest.conf" --stanza=bench "$@"; }
now_ms() { date +%s%3N; }
