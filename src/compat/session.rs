//! Settings a session of the toolkit pins that only some majors have.

use std::ffi::CStr;

/// Pinned at connection on top of the settings every major has (see `crate::environment`):
/// `transaction_timeout` (17+) set on a role or database would end the toolkit's jobs.
#[cfg(any(feature = "pg15", feature = "pg16"))]
pub const PINNED_AT_CONNECTION: &[(&CStr, &CStr)] = &[];

/// Pinned at connection on top of the settings every major has (see `crate::environment`):
/// `transaction_timeout` (17+) set on a role or database would end the toolkit's jobs.
#[cfg(not(any(feature = "pg15", feature = "pg16")))]
pub const PINNED_AT_CONNECTION: &[(&CStr, &CStr)] = &[(c"transaction_timeout", c"0")];
