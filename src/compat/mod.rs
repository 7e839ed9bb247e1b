//! What each PostgreSQL major calls things: the one place where the supported servers (15, 16,
//! 17, 18) differ for the toolkit, one module per concern, so that no feature carries a `cfg`.
//! Each function here means the same on every major; its comment says what differs.

#[cfg(not(any(feature = "pg15", feature = "pg16", feature = "pg17", feature = "pg18")))]
compile_error!("admin_toolkit supports PostgreSQL 15, 16, 17 and 18: build with one of the features pg15, pg16, pg17, pg18");

pub mod archive_module;
pub mod client_port;
pub mod executor;
pub mod portal;
pub mod process;
pub mod session;
pub mod stats;

/// The major version this library was built for and runs in (15…18): the magic block makes
/// PostgreSQL refuse to load it into any other.
pub fn server_major() -> u32 {
    pgrx::pg_sys::PG_VERSION_NUM / 10000
}

/// This server's directory inside each tablespace location, `PG_<major>_<catalog version>`
/// (PostgreSQL's TABLESPACE_VERSION_DIRECTORY; pg_upgrade leaves the old major's beside it),
/// from the catalog version the running server's control file holds
/// (`pg_control_system().catalog_version_no`), not the headers this library was built with.
pub fn tablespace_directory(catalog_version: i32) -> String {
    format!("PG_{}_{catalog_version}", server_major())
}
