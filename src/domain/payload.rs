//! Rules for what intake accepts and stores of a request: body shape and secret headers.

use super::DomainError;

/// Deepest JSON nesting accepted (DESIGN §2.4).
pub const MAX_JSON_DEPTH: usize = 128;

/// Checks that a body is UTF-8 and, when it looks like a JSON object or array, that it nests no
/// deeper than [`MAX_JSON_DEPTH`]. Returns the body as text. Malformed JSON is not an error: it
/// is kept as a raw string payload.
pub fn check_body(body: &[u8]) -> Result<&str, DomainError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        DomainError::invalid(format!(
            "Invalid request: the body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    if json_depth(text) > MAX_JSON_DEPTH {
        return Err(DomainError::invalid(format!(
            "Invalid request: the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    Ok(text)
}

/// The deepest bracket nesting of a body that looks like a JSON object or array.
fn json_depth(text: &str) -> usize {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return 0;
    }
    nesting_depth(trimmed)
}

/// The deepest nesting of `[` and `{` outside quoted strings and comments, in JSON or YAML flow
/// style (JSON has no single quotes or comments outside its strings, so one scan serves both);
/// stops counting once past [`MAX_JSON_DEPTH`]. Brackets inside YAML plain scalars count too,
/// which can only overstate the depth of documents no one writes by hand.
pub(super) fn nesting_depth(text: &str) -> usize {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double { escaped: bool },
        Comment,
    }
    let (mut depth, mut max, mut state, mut previous) = (0usize, 0usize, In::Plain, b'\n');
    for b in text.bytes() {
        match &mut state {
            In::Single if b == b'\'' => state = In::Plain,
            In::Double { escaped: true } => state = In::Double { escaped: false },
            In::Double { escaped } if b == b'\\' => *escaped = true,
            In::Double { .. } if b == b'"' => state = In::Plain,
            In::Comment if b == b'\n' => state = In::Plain,
            In::Plain => match b {
                b'\'' => state = In::Single,
                b'"' => state = In::Double { escaped: false },
                b'#' if previous.is_ascii_whitespace() => state = In::Comment,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                    if max > MAX_JSON_DEPTH {
                        return max;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
            _ => {}
        }
        previous = b;
    }
    max
}

/// Headers whose values are never stored or shown (DESIGN §2.3), inbound on webhook events and
/// outbound on event rules and their attempts alike: any name that suggests a credential (keys,
/// tokens, secrets, signatures, passwords, sessions, cookies, private material, `Authorization`).
/// `Idempotency-Key` is the one "key" that is not a secret. Matching is on the lower-case name.
pub fn is_secret_header(lower_name: &str) -> bool {
    const WORDS: [&[u8]; 10] = [
        b"key",
        b"auth",
        b"pass",
        b"credential",
        b"session",
        b"cookie",
        b"private",
        b"signature",
        b"token",
        b"secret",
    ];
    // Every header of every webhook is checked: one pass over the name, comparing a word only
    // where its first letter is (ten `str::contains` took 1.2 µs per no-match request).
    let name = lower_name.as_bytes();
    lower_name != "idempotency-key"
        && (0..name.len()).any(|at| {
            WORDS
                .iter()
                .any(|word| word[0] == name[at] && name[at..].starts_with(word))
        })
}

/// What a stored secret header's value is replaced with.
pub const REDACTED: &str = "********";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert_eq!(json_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(r#"{"a":"[[[[[[{{{{"}"#), 1);
        assert_eq!(json_depth(r#"{"a":"\"[["}"#), 1);
        assert_eq!(json_depth("plain [[[ text"), 0);
    }

    #[test]
    fn nesting_at_the_limit_passes_and_beyond_fails() {
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(check_body(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(check_body(deep.as_bytes()).is_err());
    }

    #[test]
    fn invalid_utf8_is_rejected_with_the_offset() {
        let err = check_body(b"ab\xffcd").unwrap_err();
        assert!(err.to_string().contains("offset 2"), "{err}");
    }

    #[test]
    fn secret_headers_are_recognised() {
        for h in [
            "x-api-key",
            "authorization",
            "cookie",
            "x-hub-signature-256",
            "x-gitlab-token",
            "x-auth-password",
            "x-private-key",
            "x-credential",
            "x-session-id",
            "dd-api-key",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        assert!(!is_secret_header("idempotency-key"));
        assert!(!is_secret_header("content-type"));
        assert!(!is_secret_header("x-github-event"));
        for h in ["token", "x-hook-secret", "passkey"] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["", "k", "ke", "x-ke-y", "x-toke", "secre-t"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }

    proptest::proptest! {
        /// The one-pass scan says what "the name contains one of the words" says.
        #[test]
        fn the_scan_finds_what_contains_finds(name in "[a-zé€-]{0,12}(key|auth|pass|token|secre|sessio|cooki|tok|au)?[a-z\\PC-]{0,12}") {
            let words = ["key", "auth", "pass", "credential", "session", "cookie", "private", "signature", "token", "secret"];
            let contains = name != "idempotency-key" && words.iter().any(|w| name.contains(w));
            proptest::prop_assert_eq!(is_secret_header(&name), contains);
        }
    }
}
