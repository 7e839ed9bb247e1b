#!/usr/bin/env bash
# Builds a Debian package of admin_toolkit and prints the path of the .deb on its last line.
#
#   bash scripts/package.sh <major> [out-dir]   postgresql-<major>-admin-toolkit: the extension
#                                              (release build for that PostgreSQL major, every
#                                              upgrade script) in PGDG's layout under
#                                              /usr/lib/postgresql/<major> and
#                                              /usr/share/postgresql/<major>; depends on
#                                              postgresql-<major> and on admin-toolkit
#   bash scripts/package.sh cli [out-dir]       admin-toolkit: the version-independent program
#                                              (/usr/bin/admin-toolkit, restore, verify, wal-get)
#                                              and its bash completion, shared by every major's
#                                              package so that two majors install side by side
#
# out-dir defaults to target/debian. The server's pg_config is $PG_CONFIG, else the one pgrx was
# given for that major (scripts/prereqs.sh registers 15 to 18), else PGDG's location.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

what=${1:-}
case "$what" in
    cli | 1[5-8]) ;;
    *) echo "usage: $0 <15|16|17|18|cli> [out-dir]" >&2; exit 2 ;;
esac
out_dir=$(realpath -m "${2:-target/debian}")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
# The Debian revision: 2 from the split of the program into its own package (0.5.0-1's
# postgresql-15-admin-toolkit held /usr/bin/admin-toolkit itself).
revision=2
arch=$(dpkg --print-architecture)
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$out_dir"

# Writes DEBIAN/control and md5sums into $root and builds $deb from it.
build_deb() {
    local root=$1 name=$2 depends=$3 summary=$4 description=$5 relations=${6:-}
    # Every installed file must come from this build: no stray paths outside /usr.
    local stray
    stray=$(find "$root" -mindepth 1 -maxdepth 1 ! -name usr)
    [ -z "$stray" ] || { echo "package: unexpected top-level paths: $stray" >&2; exit 1; }
    mkdir -p "$root/usr/share/doc/$name"
    printf 'admin_toolkit is licensed under the PostgreSQL License (Cargo.toml: license).\n' \
        >"$root/usr/share/doc/$name/copyright"
    install -D -m 0644 README.md "$root/usr/share/doc/$name/README.md"
    local size_kb
    size_kb=$(du -sk "$root/usr" | cut -f1)
    mkdir -p "$root/DEBIAN"
    cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version-$revision
Architecture: $arch
Maintainer: admin_toolkit developers <admin-toolkit@localhost>
Depends: $depends
${relations}Section: database
Priority: optional
Installed-Size: $size_kb
Homepage: https://localhost/admin_toolkit
Description: $summary
$description
EOF
    (cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    local deb="$out_dir/${name}_${version}-${revision}_${arch}.deb"
    dpkg-deb --root-owner-group --build "$root" "$deb" >&2
    rm -rf "$root"
    echo "$deb"
}

if [ "$what" = cli ]; then
    root="$out_dir/root-cli"
    rm -rf "$root" && mkdir -p "$root"
    echo "package: building the admin-toolkit program ($version, release)" >&2
    cargo build --locked --release -p admin-toolkit-cli >&2
    install -D -m 0755 "$target_dir/release/admin-toolkit" "$root/usr/bin/admin-toolkit"
    mkdir -p "$root/usr/share/bash-completion/completions"
    "$target_dir/release/admin-toolkit" completions bash \
        >"$root/usr/share/bash-completion/completions/admin-toolkit"
    build_deb "$root" admin-toolkit "libc6" \
        "admin_toolkit's command-line program: restore, verify and fetch WAL from its backups" \
        " The admin-toolkit program reads what the admin_toolkit PostgreSQL extension stores:
 it restores a base backup (and the WAL for point-in-time recovery) into a data directory,
 verifies a backup against its authenticated manifest, and serves as restore_command. It
 does not depend on a PostgreSQL major version; postgresql-<major>-admin-toolkit depends on
 it." \
        "Replaces: postgresql-15-admin-toolkit (<< 0.5.0-2)
Breaks: postgresql-15-admin-toolkit (<< 0.5.0-2)
"
    exit 0
fi

major=$what
pg_config=${PG_CONFIG:-}
if [ -z "$pg_config" ]; then
    pg_config=$(sed -n "s/^pg$major = \"\(.*\)\"\$/\1/p" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null || true)
fi
pg_config=${pg_config:-/usr/lib/postgresql/$major/bin/pg_config}
built_for=$("$pg_config" --version)
case "$built_for" in
    "PostgreSQL $major."*) ;;
    *) echo "package: $pg_config is $built_for, not PostgreSQL $major" >&2; exit 1 ;;
esac
name=postgresql-$major-admin-toolkit
root="$out_dir/root-$major"
staged="$out_dir/staged-$major"
rm -rf "$root" "$staged" && mkdir -p "$root" "$staged"
echo "package: building the extension ($version, release) for $built_for" >&2
# cargo pgrx package lays files out as that pg_config says (an unpacked server may live under
# /opt); the package uses PGDG's directories for the major, where Debian's server looks.
cargo pgrx package --pg-config "$pg_config" --out-dir "$staged" >&2
install -d "$root/usr/lib/postgresql/$major/lib" "$root/usr/share/postgresql/$major/extension"
cp -p "$staged$("$pg_config" --pkglibdir)"/admin_toolkit.so "$root/usr/lib/postgresql/$major/lib/"
cp -p "$staged$("$pg_config" --sharedir)"/extension/admin_toolkit* "$root/usr/share/postgresql/$major/extension/"
rm -rf "$staged"
build_deb "$root" "$name" "postgresql-$major, admin-toolkit (= $version-$revision), libc6" \
    "PostgreSQL $major extension for backups, PITR, monitoring, auditing and maintenance" \
    " admin_toolkit lives inside the server: base backups and a WAL archive on local disks or
 S3-compatible storage (encrypted if asked), point-in-time recovery, metrics and alerts,
 security auditing and password policy, scheduled maintenance and configuration tracking,
 run by a background worker. Add admin_toolkit to shared_preload_libraries, restart, then
 CREATE EXTENSION admin_toolkit. The admin-toolkit program (restore, wal-get, verify) comes
 with the admin-toolkit package."
