//! Regexes for `=~`, `.matches()`, `.split()` and the `Regex`/`In` operators: anchored for a
//! full match (as Java's `String.matches`), compiled with a size limit, and cached.
//!
//! The `regex` crate runs in time linear in the input, so a pattern cannot backtrack forever;
//! the size limits stop a pattern like `(a{1000}){1000}` from using much memory. Only patterns
//! written in triggers are cached (bounded, emptied when full); a pattern taken from a payload is
//! compiled for that one use, so senders cannot fill the cache.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Most memory a compiled regex may use.
const COMPILED_SIZE_LIMIT: usize = 1 << 20;
/// Most memory a regex's lazy DFA may use.
const DFA_SIZE_LIMIT: usize = 1 << 20;
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
/// compile. Only for patterns written in a trigger or expression: those are few, so the cache
/// stays small. A pattern that comes from a payload goes through [`compile_uncached`].
pub fn compile(pattern: &str, mode: Mode) -> Result<Arc<Regex>, String> {
    let key = (mode, pattern.to_owned());
    if let Some(hit) = cache().read().get(&key) {
        return Ok(Arc::clone(hit));
    }
    let regex = Arc::new(build(pattern, mode)?);
    let mut map = cache().write();
    if map.len() >= CACHE_CAPACITY {
        map.clear();
    }
    map.insert(key, Arc::clone(&regex));
    Ok(regex)
}

/// Compiles `pattern` without caching it: for patterns taken from a webhook, which a sender
/// could vary on every request to fill the cache with large regexes.
pub fn compile_uncached(pattern: &str, mode: Mode) -> Result<Arc<Regex>, String> {
    build(pattern, mode).map(Arc::new)
}

fn build(pattern: &str, mode: Mode) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "the regex is {} bytes long; at most {MAX_PATTERN_BYTES} are allowed",
            pattern.len()
        ));
    }
    let source = match mode {
        Mode::Search => pattern.to_owned(),
        Mode::FullMatch | Mode::FullMatchDotAll => {
            // The pattern must be valid on its own: `a)|(b` would otherwise close the group it
            // is wrapped in and compile as `^(?:a)|(b)$`, which is no longer a full match.
            check_syntax(pattern)?;
            format!("^(?:{pattern})$")
        }
    };
    RegexBuilder::new(&source)
        .dot_matches_new_line(mode == Mode::FullMatchDotAll)
        .size_limit(COMPILED_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| describe(&e))
}

/// Whether `pattern` compiles; the error says why not.
pub fn check(pattern: &str, mode: Mode) -> Result<(), String> {
    compile(pattern, mode).map(|_| ())
}

/// Whether `pattern` parses as a regex by itself. Parsing runs before compiling, so a size limit
/// of zero reports syntax errors without building anything: any other outcome means the syntax
/// is fine (the real size limit is applied to the anchored pattern).
fn check_syntax(pattern: &str) -> Result<(), String> {
    match RegexBuilder::new(pattern).size_limit(0).build() {
        Err(e @ regex::Error::Syntax(_)) => Err(describe(&e)),
        _ => Ok(()),
    }
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
        // A pattern cannot close the wrapping group to escape them.
        for escaping in ["a)|(b", "a)(?:", ".*)|(?:x", ")("] {
            for mode in [Mode::FullMatch, Mode::FullMatchDotAll] {
                let e = compile(escaping, mode).unwrap_err();
                assert!(e.starts_with("invalid regex: "), "{escaping}: {e}");
            }
        }
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
    fn patterns_from_payloads_are_compiled_but_never_cached() {
        let pattern = "from-a-payload-[0-9]{3}";
        let regex = compile_uncached(pattern, Mode::FullMatch).unwrap();
        assert!(regex.is_match("from-a-payload-123"));
        assert!(!cache()
            .read()
            .contains_key(&(Mode::FullMatch, pattern.to_owned())));
        assert!(compile_uncached("a)|(b", Mode::FullMatch).is_err());
    }

    #[test]
    fn the_cache_returns_the_same_regex() {
        let a = compile("cached-[0-9]+", Mode::FullMatch).unwrap();
        let b = compile("cached-[0-9]+", Mode::FullMatch).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
