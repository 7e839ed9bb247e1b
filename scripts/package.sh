#!/usr/bin/env bash
# Builds the Debian package postgresql-15-admin-toolkit: the extension (release build, with every
# upgrade script) under PostgreSQL 15's directories, the admin-toolkit CLI in /usr/bin and its
# bash completion. Prints the path of the .deb on its last line.
#   bash scripts/package.sh [out-dir]        (default: target/debian)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
out_dir=$(realpath -m "${1:-target/debian}")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name=postgresql-15-admin-toolkit
deb="$out_dir/${name}_${version}-1_${arch}.deb"
root="$out_dir/root"
target_dir=${CARGO_TARGET_DIR:-target}

rm -rf "$root" && mkdir -p "$root" "$out_dir"
echo "package: building the extension ($version, release) and the CLI" >&2
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$root" >&2
cargo build --locked --release -p admin-toolkit-cli >&2

install -D -m 0755 "$target_dir/release/admin-toolkit" "$root/usr/bin/admin-toolkit"
mkdir -p "$root/usr/share/bash-completion/completions"
"$target_dir/release/admin-toolkit" completions bash >"$root/usr/share/bash-completion/completions/admin-toolkit"
mkdir -p "$root/usr/share/doc/$name"
printf 'admin_toolkit is licensed under the PostgreSQL License (Cargo.toml: license).\n' >"$root/usr/share/doc/$name/copyright"
install -D -m 0644 README.md "$root/usr/share/doc/$name/README.md"

# Every installed file must come from this build: no stray paths outside /usr.
stray=$(find "$root" -mindepth 1 -maxdepth 1 ! -name usr)
[ -z "$stray" ] || { echo "package: unexpected top-level paths: $stray" >&2; exit 1; }

size_kb=$(du -sk "$root/usr" | cut -f1)
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version-1
Architecture: $arch
Maintainer: admin_toolkit developers <admin-toolkit@localhost>
Depends: postgresql-15, libc6
Section: database
Priority: optional
Installed-Size: $size_kb
Homepage: https://localhost/admin_toolkit
Description: PostgreSQL 15 extension for backups, PITR, monitoring, auditing and maintenance
 admin_toolkit lives inside the server: base backups and a WAL archive on local disks or
 S3-compatible storage (encrypted if asked), point-in-time recovery, metrics and alerts,
 security auditing and password policy, scheduled maintenance and configuration tracking,
 run by a background worker. Add admin_toolkit to shared_preload_libraries, restart, then
 CREATE EXTENSION admin_toolkit. Also installs the admin-toolkit command (restore, wal-get,
 verify) for work outside the server.
EOF
(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
rm -rf "$root"
echo "$deb"
