//! Regexes for `=~`, `.matches()`, `.split()` and the `Regex`/`In` operators: anchored for a
//! full match (as Java's `String.matches`), compiled with a size limit, and cached.
//!
//! The `regex` crate runs in time linear in the input, so a pattern cannot backtrack forever;
//! the size limits stop a pattern like `(a{1000}){1000}` from using much memory. The cache is
//! bounded and emptied when full, because patterns can come from payloads.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Most memory a compiled regex may use.
const COMPILED_SIZE_LIMIT: usize = 1 << 20;
/// Most memory a regex's lazy DFA may use.
const DFA_SIZE_LIMIT: usize = 2 << 20;
/// Most compiled regexes kept.
const CACHE_CAPACITY: usize = 1024;

/// How a pattern is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The whole input must match, `.` does not match a newline (JEXL `=~`, `.matches()`).
    FullMatch,
    /// The whole input must match and `.` matches a newline too (the `Regex` and `In`
    /// condition operators, DESIGN §4).
    FullMatchDotAll,
    /// Finds matches anywhere (`.split()`).
    Search,
}

type Cache = RwLock<HashMap<(Mode, String), Arc<Regex>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| RwLock::new(HashMap::new()))
}

/// The compiled, cached regex for `pattern` used as `mode`; the error says why it does not
/// compile.
pub fn compile(pattern: &str, mode: Mode) -> Result<Arc<Regex>, String> {
    let key = (mode, pattern.to_owned());
    if let Some(hit) = cache().read().get(&key) {
        return Ok(Arc::clone(hit));
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "the regex is {} bytes long; at most {MAX_PATTERN_BYTES} are allowed",
            pattern.len()
        ));
    }
    let source = match mode {
        Mode::Search => pattern.to_owned(),
        Mode::FullMatch | Mode::FullMatchDotAll => format!("^(?:{pattern})$"),
    };
    let regex = RegexBuilder::new(&source)
        .dot_matches_new_line(mode == Mode::FullMatchDotAll)
        .size_limit(COMPILED_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| describe(&e))?;
    let regex = Arc::new(regex);
    let mut map = cache().write();
    if map.len() >= CACHE_CAPACITY {
        map.clear();
    }
    map.insert(key, Arc::clone(&regex));
    Ok(regex)
}

/// Whether `pattern` compiles; the error says why not.
pub fn check(pattern: &str, mode: Mode) -> Result<(), String> {
    compile(pattern, mode).map(|_| ())
}

fn describe(error: &regex::Error) -> String {
    match error {
        regex::Error::CompiledTooBig(limit) => {
            format!("the regex is too large once compiled (limit {limit} bytes)")
        }
        // The syntax error spans several lines with a caret; the last line says what is wrong.
        other => {
            let text = other.to_string();
            let reason = text
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with("error:"))
                .map(|l| {
                    l.trim_start()
                        .trim_start_matches("error:")
                        .trim()
                        .to_owned()
                })
                .unwrap_or(text);
            format!("invalid regex: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_match_is_anchored_and_dot_all_only_when_asked() {
        let full = compile("a.c", Mode::FullMatch).unwrap();
        assert!(full.is_match("abc"));
        assert!(!full.is_match("xabc"));
        assert!(!full.is_match("a\nc"));
        assert!(compile("a.c", Mode::FullMatchDotAll)
            .unwrap()
            .is_match("a\nc"));
        // Alternation stays inside the anchors.
        assert!(!compile("a|b", Mode::FullMatch).unwrap().is_match("ab"));
    }

    #[test]
    fn bad_and_huge_patterns_are_refused_with_a_reason() {
        let e = compile("a(b", Mode::FullMatch).unwrap_err();
        assert!(e.starts_with("invalid regex: "), "{e}");
        assert!(e.contains("unclosed"), "{e}");
        let e = compile("(a{1000}){1000}", Mode::FullMatch).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = compile(&"a".repeat(MAX_PATTERN_BYTES + 1), Mode::Search).unwrap_err();
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn the_cache_returns_the_same_regex() {
        let a = compile("cached-[0-9]+", Mode::FullMatch).unwrap();
        let b = compile("cached-[0-9]+", Mode::FullMatch).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
