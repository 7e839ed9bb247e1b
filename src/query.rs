//! Small SPI helpers.

use pgrx::datum::{FromDatum, IntoDatum};
use pgrx::prelude::*;

/// First column of the first row of a read-only query, `None` when there is no row or it is
/// NULL. Unlike `Spi::get_one`, which runs every query as a write and so assigns a transaction
/// ID, this runs read-only: it works on a hot standby and burns no XID.
pub fn read_scalar<T: FromDatum + IntoDatum>(sql: &str) -> spi::Result<Option<T>> {
    Spi::connect(|client| {
        let rows = client.select(sql, Some(1), &[])?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<T>()
    })
}
