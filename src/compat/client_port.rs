//! What the client-authentication hook reads of a connection (`Port`).

use pgrx::pg_sys;
use std::ffi::c_char;

/// A connection's names, as NUL-terminated strings owned by the server (null: not given).
pub struct ClientPort {
    pub user_name: *const c_char,
    pub database_name: *const c_char,
    pub application_name: *const c_char,
    pub remote_host: *const c_char,
}

/// The layout of `Port` as this major's server has it.
#[cfg(not(feature = "pg17"))]
type PortLayout = pg_sys::libpq::be::Port;

/// pgrx 0.18.1's `Port` for 17 still has `canAcceptConnections`, which 17 removed: every later
/// field would be read 8 bytes off. This is 17's `Port` (libpq/libpq-be.h) up to
/// `application_name`.
#[cfg(feature = "pg17")]
#[allow(dead_code)] // The layout of a C struct: only some fields are read.
#[repr(C)]
struct PortLayout {
    sock: i32,
    noblock: bool,
    proto: u32,
    laddr: SockAddr,
    raddr: SockAddr,
    remote_host: *mut c_char,
    remote_hostname: *mut c_char,
    remote_hostname_resolv: i32,
    remote_hostname_errcode: i32,
    remote_port: *mut c_char,
    database_name: *mut c_char,
    user_name: *mut c_char,
    cmdline_options: *mut c_char,
    guc_options: *mut pg_sys::List,
    application_name: *mut c_char,
}

/// `SockAddr`: a `sockaddr_storage` (128 bytes, 8-aligned) and its length.
#[cfg(feature = "pg17")]
#[allow(dead_code)] // The layout of a C struct: only some fields are read.
#[repr(C)]
struct SockAddr {
    addr: [u64; 16],
    salen: u32,
}

/// The names of connection `port`.
///
/// # Safety
/// `port` is the `Port` PostgreSQL passed to the client-authentication hook.
pub unsafe fn client_port(port: *const pg_sys::libpq::be::Port) -> ClientPort {
    let port = port.cast::<PortLayout>();
    unsafe {
        ClientPort {
            user_name: (*port).user_name,
            database_name: (*port).database_name,
            application_name: (*port).application_name,
            remote_host: (*port).remote_host,
        }
    }
}
