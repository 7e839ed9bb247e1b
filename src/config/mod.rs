//! Configuration management: tuning advice from real inputs (tracked configuration changes
//! join here as they land).

pub mod api;
pub mod changes;
pub mod duty;
pub mod recommendations;
