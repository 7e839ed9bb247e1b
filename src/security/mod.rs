//! Security: password policy (audit capture, suspicious-activity detection, roles and RLS
//! helpers join here as they land).

mod password_policy;
