//! Maintenance: upkeep of the extension's own partitioned logs (scheduled VACUUM / ANALYZE /
//! REINDEX and health checks join here as they land).

pub mod api;
mod catalog_rows;
pub mod duty;
pub mod facts;
mod facts_ingest;
pub mod partitions;
mod plan;
pub mod remote;
pub mod runs;
