//! The transaction runtime every background process of the toolkit uses: a step of work in a
//! transaction of its own (`step`), and a statement run top-level, outside any transaction
//! block (`top_level`).

pub mod step;
pub mod top_level;
