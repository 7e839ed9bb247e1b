//! Small SPI helpers.

use pgrx::datum::{FromDatum, IntoDatum};
use pgrx::prelude::*;

/// First column of the first row of a read-only query, `None` when there is no row or it is
/// NULL. Unlike `Spi::get_one`, which runs every query as a write and so assigns a transaction
/// ID, this runs read-only: it works on a hot standby and burns no XID.
pub fn read_scalar<T: FromDatum + IntoDatum>(sql: &str) -> spi::Result<Option<T>> {
    one_row(sql, &[], |row| row.get_one::<T>()).map(Option::flatten)
}

/// The first row of a read-only query, read by `read`; `None` when there is no row. The
/// one-row idiom, written once: a caller names its columns' types where it reads them.
pub fn one_row<T>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
    read: impl FnOnce(&pgrx::spi::SpiTupleTable) -> spi::Result<T>,
) -> spi::Result<Option<T>> {
    Spi::connect(|client| {
        let rows = client.select(sql, Some(1), args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        read(&rows.first()).map(Some)
    })
}
