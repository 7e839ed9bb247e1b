//! What the executor says of a statement's tables.

use pgrx::pg_sys;

/// The permissions a statement requires on a range-table entry (`ACL_SELECT`…). PostgreSQL 16
/// moved them from the entry to the plan's `permInfos`, found by the entry's 1-based
/// `perminfoindex` (0: none required, e.g. a partition the planner added).
///
/// # Safety
/// `statement` and `entry` are a plan and one of its range-table entries, alive.
pub unsafe fn required_permissions(
    statement: *const pg_sys::PlannedStmt,
    entry: *const pg_sys::RangeTblEntry,
) -> pg_sys::AclMode {
    #[cfg(feature = "pg15")]
    {
        let _plan_not_needed = statement;
        unsafe { (*entry).requiredPerms }
    }
    #[cfg(not(feature = "pg15"))]
    unsafe {
        let index = (*entry).perminfoindex;
        let infos = (*statement).permInfos;
        if index == 0 || infos.is_null() || index as i32 > (*infos).length {
            return 0;
        }
        let info = pg_sys::list_nth(infos, index as i32 - 1).cast::<pg_sys::RTEPermissionInfo>();
        info.as_ref().map_or(0, |i| i.requiredPerms)
    }
}
