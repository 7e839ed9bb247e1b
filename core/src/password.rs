//! Password policy: the rules of the seed's `validate_password_policy`, in one place, so that the
//! SQL function and the server's `check_password_hook` can never disagree.

use std::fmt;

/// The policy's tunable parts (the rest of the rules are fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in characters (not bytes).
    pub min_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy { min_length: 12 }
    }
}

/// One rule's verdict, as a row of `validate_password_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    pub check_name: &'static str,
    pub passed: bool,
    pub message: String,
}

/// Arguments the policy refuses to judge at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyInputError {
    EmptyUsername,
    EmptyPassword,
}

impl fmt::Display for PolicyInputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyInputError::EmptyUsername => f.write_str("username must not be empty"),
            PolicyInputError::EmptyPassword => f.write_str("password must not be empty"),
        }
    }
}

impl std::error::Error for PolicyInputError {}

/// Characters the seed's regular expression lists as special. Any other printable character that
/// is neither a letter, a digit nor white space (`'`, `/`, `~`, `` ` ``, non-ASCII symbols) counts
/// too: an administrator expects "special" to mean "not alphanumeric", not a closed list.
fn is_special(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

/// Judges `password` for `username` against every rule, in the seed's order:
/// length, uppercase, lowercase, numbers, special_chars, username_similarity.
pub fn check_password(
    policy: &PasswordPolicy,
    username: &str,
    password: &str,
) -> Result<Vec<RuleResult>, PolicyInputError> {
    if username.is_empty() {
        return Err(PolicyInputError::EmptyUsername);
    }
    if password.is_empty() {
        return Err(PolicyInputError::EmptyPassword);
    }
    let long_enough = password.chars().count() >= policy.min_length;
    let has_upper = password.chars().any(char::is_uppercase);
    let has_lower = password.chars().any(char::is_lowercase);
    let has_digit = password.chars().any(|c| c.is_ascii_digit());
    let has_special = password.chars().any(is_special);
    let contains_username = password.to_uppercase().contains(&username.to_uppercase());

    let rule = |check_name, passed, ok: &str, fail: String| RuleResult {
        check_name,
        passed,
        message: if passed { ok.to_string() } else { fail },
    };
    Ok(vec![
        rule(
            "length",
            long_enough,
            "Password length is adequate",
            format!("Password must be at least {} characters", policy.min_length),
        ),
        rule(
            "uppercase",
            has_upper,
            "Contains uppercase letters",
            "Must contain at least one uppercase letter".into(),
        ),
        rule(
            "lowercase",
            has_lower,
            "Contains lowercase letters",
            "Must contain at least one lowercase letter".into(),
        ),
        rule(
            "numbers",
            has_digit,
            "Contains numbers",
            "Must contain at least one number".into(),
        ),
        rule(
            "special_chars",
            has_special,
            "Contains special characters",
            "Must contain at least one special character".into(),
        ),
        rule(
            "username_similarity",
            !contains_username,
            "Password is not similar to username",
            "Password must not contain username".into(),
        ),
    ])
}

/// The messages of every failed rule, for an error that must list them all (and never the
/// password itself).
pub fn failed_rules(results: &[RuleResult]) -> Vec<&str> {
    results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.message.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(user: &str, pw: &str) -> Vec<(&'static str, bool)> {
        check_password(&PasswordPolicy::default(), user, pw)
            .unwrap()
            .into_iter()
            .map(|r| (r.check_name, r.passed))
            .collect()
    }

    #[test]
    fn seed_examples() {
        assert_eq!(
            verdicts("alice_analyst", "weak"),
            vec![
                ("length", false),
                ("uppercase", false),
                ("lowercase", true),
                ("numbers", false),
                ("special_chars", false),
                ("username_similarity", true),
            ]
        );
        assert!(verdicts("alice_analyst", "SecureP@ssw0rd123!")
            .iter()
            .all(|(_, ok)| *ok));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let policy = PasswordPolicy { min_length: 4 };
        let r = check_password(&policy, "u", "ééé").unwrap();
        assert!(!r[0].passed);
        let r = check_password(&policy, "u", "éééé").unwrap();
        assert!(r[0].passed);
    }

    #[test]
    fn min_length_in_message() {
        let policy = PasswordPolicy { min_length: 20 };
        let r = check_password(&policy, "u", "short").unwrap();
        assert_eq!(r[0].message, "Password must be at least 20 characters");
    }

    #[test]
    fn username_match_is_case_insensitive() {
        let r = verdicts("Alice", "xxALICExx-12345Q");
        assert_eq!(r[5], ("username_similarity", false));
    }

    #[test]
    fn special_characters_beyond_seed_list() {
        for pw in [
            "Abcdefghijk1'",
            "Abcdefghijk1/",
            "Abcdefghijk1~",
            "Abcdefghijk1€",
        ] {
            assert!(verdicts("bob", pw)[4].1, "{pw}");
        }
        assert!(!verdicts("bob", "Abcdefghijk1 ")[4].1);
    }

    #[test]
    fn empty_inputs_are_refused() {
        let p = PasswordPolicy::default();
        assert_eq!(
            check_password(&p, "", "x"),
            Err(PolicyInputError::EmptyUsername)
        );
        assert_eq!(
            check_password(&p, "u", ""),
            Err(PolicyInputError::EmptyPassword)
        );
    }

    #[test]
    fn failed_rules_lists_only_failures() {
        let r = check_password(&PasswordPolicy::default(), "bob", "abcdefghijklmnop").unwrap();
        assert_eq!(
            failed_rules(&r),
            vec![
                "Must contain at least one uppercase letter",
                "Must contain at least one number",
                "Must contain at least one special character"
            ]
        );
    }
}
