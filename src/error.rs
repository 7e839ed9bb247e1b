//! One error type for everything the extension refuses, each kind with its SQLSTATE. (42501
//! comes mostly from the GRANTs themselves, and from the checks a job's owner must pass.)

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolkitError {
    code: PgSqlErrorCode,
    message: String,
    hint: Option<String>,
    detail: Option<String>,
}

impl ToolkitError {
    fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        ToolkitError {
            code,
            message: message.into(),
            hint: None,
            detail: None,
        }
    }

    /// 22023: a parameter has a value that cannot be used.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// 22004: a parameter is NULL where a value is required.
    pub fn null_value(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, message)
    }

    /// 42704: the named object does not exist.
    pub fn undefined_object(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, message)
    }

    /// 42501: the role may not do this.
    pub fn insufficient_privilege(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message)
    }

    /// 55000: the server is not in a state that allows this.
    pub fn wrong_state(message: impl Into<String>) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message,
        )
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Raises the error as a PostgreSQL ERROR; the current statement is aborted.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, pgrx::pg_sys::function_name!());
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
    }
}

/// Unwraps a required SQL argument, raising 22004 naming it when it is NULL.
pub fn require<T>(value: Option<T>, argument: &str) -> T {
    value
        .unwrap_or_else(|| ToolkitError::null_value(format!("{argument} must not be NULL")).raise())
}
