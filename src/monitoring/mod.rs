//! Monitoring: metric collection, stateful alerts with notifications, and the monitoring views
//! (defined in sql/finalize.sql).

pub mod alerts;
pub mod api;
pub mod collect;
pub mod duty;
pub mod endpoint;
pub mod exposition;
pub mod notifications;

#[cfg(any(test, feature = "pg_test"))]
mod sql_tests;
