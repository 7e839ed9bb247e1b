//! The archive-module entry point (`archive_library = 'admin_toolkit'`). PostgreSQL 15 hands
//! the module a callbacks struct to fill; 16 made `_PG_archive_module_init` return the module's
//! own callbacks, each taking a state pointer, and pgrx binds none of the 16+ form.
//! `archive_module_entry_point!(configured, archive)` defines the right one in the module that
//! archives (in a child module of its own), with `configured: fn() -> bool` and
//! `archive: fn(&CStr, &CStr) -> bool` (the WAL file's name and path).

use std::ffi::{c_char, CStr};

/// The names the archiver passes, as `CStr`s; `None` if one is missing.
///
/// # Safety
/// `file` and `path` are null or NUL-terminated strings that outlive the call.
pub unsafe fn names<'a>(file: *const c_char, path: *const c_char) -> Option<(&'a CStr, &'a CStr)> {
    if file.is_null() || path.is_null() {
        return None;
    }
    // SAFETY: as the caller promises.
    Some(unsafe { (CStr::from_ptr(file), CStr::from_ptr(path)) })
}

/// `ArchiveModuleState` (archive/archive_module.h, 16+).
#[cfg(not(feature = "pg15"))]
#[allow(dead_code)] // Made by the archiver, never by us.
#[repr(C)]
pub struct ArchiveModuleState {
    pub private_data: *mut std::ffi::c_void,
}

/// `ArchiveModuleCallbacks` (archive/archive_module.h, 16+).
#[cfg(not(feature = "pg15"))]
#[repr(C)]
pub struct ArchiveModuleCallbacks {
    pub startup_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
    pub check_configured_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState) -> bool>,
    pub archive_file_cb: Option<
        unsafe extern "C-unwind" fn(*mut ArchiveModuleState, *const c_char, *const c_char) -> bool,
    >,
    pub shutdown_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
}

// SAFETY: read-only function pointers, shared with the archiver for the process's life.
#[cfg(not(feature = "pg15"))]
unsafe impl Sync for ArchiveModuleCallbacks {}

/// Defines `_PG_archive_module_init` for this major (see the module's comment).
#[cfg(feature = "pg15")]
#[macro_export]
macro_rules! archive_module_entry_point {
    ($configured:ident, $archive:ident) => {
        mod archive_module_entry_point {
            #[pgrx::pg_guard]
            unsafe extern "C-unwind" fn check_configured() -> bool {
                super::$configured()
            }

            #[pgrx::pg_guard]
            unsafe extern "C-unwind" fn archive_file(
                file: *const std::ffi::c_char,
                path: *const std::ffi::c_char,
            ) -> bool {
                // SAFETY: the archiver passes NUL-terminated names.
                unsafe { $crate::compat::archive_module::names(file, path) }
                    .is_some_and(|(file, path)| super::$archive(file, path))
            }

            /// Called by the archiver when it loads the library.
            ///
            /// # Safety
            /// Called by PostgreSQL with a valid callbacks struct.
            #[pgrx::pg_guard]
            #[unsafe(no_mangle)]
            pub unsafe extern "C-unwind" fn _PG_archive_module_init(
                callbacks: *mut pgrx::pg_sys::ArchiveModuleCallbacks,
            ) {
                unsafe {
                    (*callbacks).check_configured_cb = Some(check_configured);
                    (*callbacks).archive_file_cb = Some(archive_file);
                    (*callbacks).shutdown_cb = None;
                }
            }
        }
    };
}

/// Defines `_PG_archive_module_init` for this major (see the module's comment).
#[cfg(not(feature = "pg15"))]
#[macro_export]
macro_rules! archive_module_entry_point {
    ($configured:ident, $archive:ident) => {
        mod archive_module_entry_point {
            #[pgrx::pg_guard]
            unsafe extern "C-unwind" fn check_configured(
                _state: *mut $crate::compat::archive_module::ArchiveModuleState,
            ) -> bool {
                super::$configured()
            }

            #[pgrx::pg_guard]
            unsafe extern "C-unwind" fn archive_file(
                _state: *mut $crate::compat::archive_module::ArchiveModuleState,
                file: *const std::ffi::c_char,
                path: *const std::ffi::c_char,
            ) -> bool {
                // SAFETY: the archiver passes NUL-terminated names.
                unsafe { $crate::compat::archive_module::names(file, path) }
                    .is_some_and(|(file, path)| super::$archive(file, path))
            }

            static CALLBACKS: $crate::compat::archive_module::ArchiveModuleCallbacks =
                $crate::compat::archive_module::ArchiveModuleCallbacks {
                    startup_cb: None,
                    check_configured_cb: Some(check_configured),
                    archive_file_cb: Some(archive_file),
                    shutdown_cb: None,
                };

            /// Called by the archiver when it loads the library; it keeps the pointer.
            #[pgrx::pg_guard]
            #[unsafe(no_mangle)]
            pub extern "C-unwind" fn _PG_archive_module_init(
            ) -> *const $crate::compat::archive_module::ArchiveModuleCallbacks {
                &CALLBACKS
            }
        }
    };
}
