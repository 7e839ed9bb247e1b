//! Audit decisions that need no server: what a statement is called in the audit log, and how a
//! statement that may carry a secret is redacted before it is stored or logged; how an event is
//! written into the audit journal ([`journal`]).

pub mod chain;
pub mod journal;

/// The audit log's `operation_type` and `object_type` for a command tag (`CREATE TABLE`,
/// `GRANT`, `GRANT ROLE`, `ALTER SYSTEM`, ...). Role grants are filed as plain GRANT / REVOKE,
/// as the specification's detection rules count them.
pub fn operation_for_tag(tag: &str) -> (String, Option<String>) {
    match tag {
        "GRANT ROLE" => ("GRANT".into(), Some("role".into())),
        "REVOKE ROLE" => ("REVOKE".into(), Some("role".into())),
        "GRANT" | "REVOKE" => (tag.into(), None),
        "ALTER SYSTEM" => (tag.into(), Some("configuration".into())),
        _ => {
            let object = tag.split_once(' ').map(|(_, rest)| rest.to_lowercase());
            let object = match object.as_deref() {
                Some("user" | "group") => Some("role".to_string()),
                _ => object,
            };
            (tag.into(), object)
        }
    }
}

/// Whether a statement may carry a secret: anything mentioning a password (CREATE/ALTER ROLE
/// ... PASSWORD, user mappings, foreign servers with password options).
pub fn may_carry_secret(sql: &str) -> bool {
    sql.as_bytes()
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"password"))
}

const REDACTED: &str = "'********'";

/// The statement with every string literal replaced by `'********'` when it may carry a secret;
/// unchanged otherwise. Handles '' escapes, E'' strings with backslash escapes, and
/// dollar-quoted strings, so no part of a quoted password survives.
pub fn redact_secrets(sql: &str) -> String {
    if !may_carry_secret(sql) {
        return sql.to_string();
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let escape_string = (c == b'E' || c == b'e')
            && bytes.get(i + 1) == Some(&b'\'')
            && (i == 0 || !is_ident_byte(bytes[i - 1]));
        if c == b'\'' || escape_string {
            let start = if escape_string { i + 2 } else { i + 1 };
            i = skip_quoted(bytes, start, escape_string);
            out.push_str(REDACTED);
            continue;
        }
        if c == b'$' {
            if let Some(tag_end) = dollar_tag_end(bytes, i) {
                let tag = &sql[i..=tag_end];
                let body = tag_end + 1;
                i = match sql[body..].find(tag) {
                    Some(pos) => body + pos + tag.len(),
                    None => bytes.len(),
                };
                out.push_str(REDACTED);
                continue;
            }
        }
        let ch = sql[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Index just past the closing quote of a literal whose body starts at `start`.
fn skip_quoted(bytes: &[u8], mut i: usize, backslash_escapes: bool) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// If a dollar-quote opening tag (`$$` or `$tag$`) starts at `i`, the index of its closing `$`.
fn dollar_tag_end(bytes: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident_byte(bytes[i - 1]) {
        return None; // part of an identifier such as a$b
    }
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'$' => return Some(j),
            b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => j += 1,
            b if b.is_ascii_digit() && j > i + 1 => j += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations() {
        assert_eq!(
            operation_for_tag("GRANT ROLE"),
            ("GRANT".into(), Some("role".into()))
        );
        assert_eq!(operation_for_tag("GRANT"), ("GRANT".into(), None));
        assert_eq!(
            operation_for_tag("ALTER ROLE"),
            ("ALTER ROLE".into(), Some("role".into()))
        );
        assert_eq!(
            operation_for_tag("CREATE USER"),
            ("CREATE USER".into(), Some("role".into()))
        );
        assert_eq!(
            operation_for_tag("CREATE TABLE"),
            ("CREATE TABLE".into(), Some("table".into()))
        );
        assert_eq!(
            operation_for_tag("ALTER DEFAULT PRIVILEGES"),
            (
                "ALTER DEFAULT PRIVILEGES".into(),
                Some("default privileges".into())
            )
        );
    }

    #[test]
    fn statements_without_passwords_are_kept() {
        let sql = "CREATE TABLE t (note text DEFAULT 'hello')";
        assert_eq!(redact_secrets(sql), sql);
    }

    #[test]
    fn password_literals_are_redacted() {
        assert_eq!(
            redact_secrets("CREATE ROLE alice LOGIN PASSWORD 'S3cret!''quoted'"),
            "CREATE ROLE alice LOGIN PASSWORD '********'"
        );
        assert_eq!(
            redact_secrets("alter user bob with password E'a\\'b' valid until 'infinity'"),
            "alter user bob with password '********' valid until '********'"
        );
        assert_eq!(
            redact_secrets("ALTER ROLE x PASSWORD $pw$it's $$ secret$pw$;"),
            "ALTER ROLE x PASSWORD '********';"
        );
        assert_eq!(
            redact_secrets("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password 'p')"),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user '********', password '********')"
        );
    }

    #[test]
    fn unterminated_literal_hides_the_rest() {
        assert_eq!(
            redact_secrets("ALTER ROLE x PASSWORD 'oops"),
            "ALTER ROLE x PASSWORD '********'"
        );
    }

    #[test]
    fn identifiers_with_dollar_and_non_ascii_are_untouched() {
        assert_eq!(
            redact_secrets("ALTER ROLE a$b PASSWORD NULL -- é"),
            "ALTER ROLE a$b PASSWORD NULL -- é"
        );
    }
}
