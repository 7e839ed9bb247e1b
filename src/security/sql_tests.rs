//! SQL behaviour of detect_suspicious_activity(): each threshold setting moves what is reported.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// How many events detect_suspicious_activity() reports of `kind` for `user`.
    fn reported(kind: &str, user: &str) -> Option<i64> {
        match Spi::get_one_with_args::<i64>(
            "SELECT event_count FROM admin_toolkit.detect_suspicious_activity() \
              WHERE alert_type = $1 AND username = $2",
            &[kind.into(), user.into()],
        ) {
            Ok(count) => count,
            Err(pgrx::spi::SpiError::InvalidPosition) => None,
            Err(e) => panic!("detect_suspicious_activity(): {e}"),
        }
    }

    fn audit(user: &str, operation: &str, object: &str, success: bool) {
        Spi::run_with_args(
            "INSERT INTO admin_toolkit.security_audit_log \
               (username, database_name, operation_type, object_name, object_type, success) \
             VALUES ($1, current_database(), $2, $3, 'table', $4)",
            &[user.into(), operation.into(), object.into(), success.into()],
        )
        .unwrap();
    }

    #[pg_test]
    fn each_threshold_setting_moves_what_is_reported() {
        for _ in 0..3 {
            audit("threshold_mallory", "LOGIN", "postgres", false);
        }
        Spi::run("SET admin_toolkit.failed_login_threshold = 3").unwrap();
        assert_eq!(reported("failed_login_attempts", "threshold_mallory"), None);
        Spi::run("SET admin_toolkit.failed_login_threshold = 2").unwrap();
        assert_eq!(
            reported("failed_login_attempts", "threshold_mallory"),
            Some(3)
        );

        audit("threshold_eve", "GRANT", "payroll", true);
        audit("threshold_eve", "ALTER ROLE", "eve", true);
        Spi::run("SET admin_toolkit.privilege_change_threshold = 2").unwrap();
        assert_eq!(reported("privilege_escalation", "threshold_eve"), None);
        Spi::run("SET admin_toolkit.privilege_change_threshold = 1").unwrap();
        assert_eq!(reported("privilege_escalation", "threshold_eve"), Some(2));

        for table in ["a", "b", "c"] {
            audit("threshold_reader", "SELECT", table, true);
        }
        Spi::run("SET admin_toolkit.read_count_threshold = 1000").unwrap();
        Spi::run("SET admin_toolkit.distinct_tables_threshold = 3").unwrap();
        assert_eq!(reported("excessive_data_access", "threshold_reader"), None);
        Spi::run("SET admin_toolkit.distinct_tables_threshold = 2").unwrap();
        assert_eq!(
            reported("excessive_data_access", "threshold_reader"),
            Some(3)
        );
    }
}
