#!/usr/bin/env bash
# Builds admin_toolkit 0.1.0 — commit e9c79f5, the release every upgrade script starts from —
# from that commit's own sources (git archive) into target/upgrade-from-0.1.0/package, a tree of
# the files `cargo pgrx install` would install; kept between runs. Prints the tree's path.
# pgrx-tests/tests/upgrade.rs installs it, fills a cluster, then upgrades it to this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
commit=e9c79f5ee574d383f4207e8e5cded51ee1f3cc5f
out=$PWD/target/upgrade-from-0.1.0
if [ "$(cat "$out/built" 2>/dev/null)" = "$commit" ]; then
    echo "$out/package"
    exit 0
fi
git cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "build-0.1.0: commit $commit is not in this clone (a shallow clone?); fetch it first" >&2
    exit 1
}
rm -rf "$out"
mkdir -p "$out/src"
git archive "$commit" | tar -x -C "$out/src"
echo "build-0.1.0: building admin_toolkit 0.1.0 ($commit) in $out (a few minutes the first time)" >&2
# Its own target directory: the build may run while `cargo test` holds this workspace's.
# Without debug information or incremental caches, and the target directory removed once
# packaged: only the package is used, and disk is short on CI machines.
(cd "$out/src" && CARGO_TARGET_DIR="$out/target" CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false \
    cargo pgrx package --debug --pg-config "$PG_CONFIG" --out-dir "$out/package") >&2
rm -rf "$out/target"
echo "$commit" >"$out/built"
echo "$out/package"
