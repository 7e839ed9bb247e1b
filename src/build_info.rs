//! What build of admin_toolkit this server loaded: version, commit, profile, and the PostgreSQL
//! it was built for. A debug build is many times slower (a backup: 20 s instead of 1.5 s); this
//! makes it visible.

use pgrx::prelude::*;

/// The profile this library was compiled with.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Version, commit (`-dirty` when built from uncommitted changes), build profile and the
/// PostgreSQL version the library was built for.
// Stable, not immutable: the answer changes when a new build is loaded.
#[pg_extern(stable, parallel_safe)]
fn build_info() -> TableIterator<
    'static,
    (
        name!(version, String),
        name!(git_commit, String),
        name!(build_profile, String),
        name!(built_for, String),
    ),
> {
    let built_for = format!(
        "PostgreSQL {}",
        pg_sys::PG_VERSION.to_str().unwrap_or("(unknown)")
    );
    TableIterator::once((
        env!("CARGO_PKG_VERSION").to_string(),
        env!("ADMIN_TOOLKIT_COMMIT").to_string(),
        profile().to_string(),
        built_for,
    ))
}
