//! Turns JEXL text into tokens, each with its byte offset for error columns.

use serde_json::Value;

use crate::expr::reference::{parse_reference, reference_end};
use crate::expr::{ExprError, Reference};

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A number, string, boolean or null literal.
    Literal(Value),
    /// A `<+...>` reference.
    Reference(Reference),
    /// A name: a method or function name.
    Ident(String),
    And,
    Or,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `=~`
    Match,
    /// `!~`
    NotMatch,
    /// `=^`
    StartsWith,
    /// `!^`
    NotStartsWith,
    /// `=$`
    EndsWith,
    /// `!$`
    NotEndsWith,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Eof,
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub offset: usize,
}

pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let two = |second: u8| bytes.get(i + 1) == Some(&second);
        let (tok, len) = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'<' if two(b'+') => {
                let end = reference_end(text, i)?;
                let reference = parse_reference(text, i, end)?;
                (Tok::Reference(reference), end - i)
            }
            b'<' if two(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if two(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'=' if two(b'=') => (Tok::Eq, 2),
            b'=' if two(b'~') => (Tok::Match, 2),
            b'=' if two(b'^') => (Tok::StartsWith, 2),
            b'=' if two(b'$') => (Tok::EndsWith, 2),
            b'=' => {
                return Err(ExprError::at(
                    text,
                    i,
                    "'=' is not an operator (assignment is not allowed); use '==' to compare",
                ))
            }
            b'!' if two(b'=') => (Tok::Ne, 2),
            b'!' if two(b'~') => (Tok::NotMatch, 2),
            b'!' if two(b'^') => (Tok::NotStartsWith, 2),
            b'!' if two(b'$') => (Tok::NotEndsWith, 2),
            b'!' => (Tok::Not, 1),
            b'&' if two(b'&') => (Tok::And, 2),
            b'|' if two(b'|') => (Tok::Or, 2),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => (Tok::Dot, 1),
            b'"' | b'\'' => {
                let (s, len) = string(text, i)?;
                (Tok::Literal(Value::String(s)), len)
            }
            b'0'..=b'9' | b'.' => number(text, i)?,
            b if b.is_ascii_alphabetic() || b == b'_' || b == b'$' => {
                let len = text[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                    .unwrap_or(text.len() - i);
                let word = &text[i..i + len];
                let tok = match word {
                    "true" => Tok::Literal(Value::Bool(true)),
                    "false" => Tok::Literal(Value::Bool(false)),
                    "null" => Tok::Literal(Value::Null),
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Ident(word.to_owned()),
                };
                (tok, len)
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or(' ');
                return Err(ExprError::at(
                    text,
                    i,
                    format!("unexpected character '{c}'"),
                ));
            }
        };
        tokens.push(Token { tok, offset: start });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::Eof,
        offset: text.len(),
    });
    Ok(tokens)
}

/// A quoted string starting at the quote `text[at]`; returns it and its length in bytes.
fn string(text: &str, at: usize) -> Result<(String, usize), ExprError> {
    let quote = text.as_bytes()[at] as char;
    let mut out = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((n, c)) = chars.next() {
        match c {
            '\\' => {
                let Some((m, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let hex = text.get(at + 1 + m + 1..at + 1 + m + 5).unwrap_or("");
                        let code = u32::from_str_radix(hex, 16)
                            .ok()
                            .filter(|_| {
                                hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit())
                            })
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                ExprError::at(
                                    text,
                                    at + 1 + m - 1,
                                    "invalid \\u escape: expected four hex digits",
                                )
                            })?;
                        out.push(code);
                        for _ in 0..4 {
                            chars.next();
                        }
                    }
                    // JEXL: a backslash keeps any other character as it is (\\ \' \").
                    other => out.push(other),
                }
            }
            c if c == quote => return Ok((out, n + 2)),
            c => out.push(c),
        }
    }
    Err(ExprError::at(text, at, "unterminated string literal"))
}

/// An integer or decimal literal at `at`.
fn number(text: &str, at: usize) -> Result<(Tok, usize), ExprError> {
    let rest = &text[at..];
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut len = digits(rest);
    let mut float = false;
    if rest[len..].starts_with('.') && rest[len + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        float = true;
        len += 1 + digits(&rest[len + 1..]);
    }
    if rest[len..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return Err(ExprError::at(
            text,
            at + len,
            "unexpected letter after a number",
        ));
    }
    let literal = &rest[..len];
    let value = if float {
        literal
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
    } else {
        literal.parse::<i64>().ok().map(Value::from)
    };
    let value = value.ok_or_else(|| ExprError::at(text, at, "number literal is too large"))?;
    Ok((Tok::Literal(value), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_literals_tokenize() {
        assert_eq!(
            toks("a =~ 'x' && 1.5 != -2"),
            vec![
                Tok::Ident("a".into()),
                Tok::Match,
                Tok::Literal(json!("x")),
                Tok::And,
                Tok::Literal(json!(1.5)),
                Tok::Ne,
                Tok::Minus,
                Tok::Literal(json!(2)),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks(r#""a\"b\\c\n\u00e9" !^ !$ =^ =$ !~"#)[..6],
            [
                Tok::Literal(json!("a\"b\\c\né")),
                Tok::NotStartsWith,
                Tok::NotEndsWith,
                Tok::StartsWith,
                Tok::EndsWith,
                Tok::NotMatch
            ]
        );
    }

    #[test]
    fn references_are_single_tokens() {
        let t = toks("<+trigger.payload.a> > 3");
        assert!(matches!(t[0], Tok::Reference(_)));
        assert_eq!(t[1], Tok::Gt);
    }

    #[test]
    fn errors_carry_the_column() {
        assert_eq!(tokenize("1 = 2").unwrap_err().column, 3);
        assert_eq!(tokenize("'abc").unwrap_err().column, 1);
        assert_eq!(tokenize("x # y").unwrap_err().column, 3);
        assert_eq!(tokenize("x é").unwrap_err().column, 3);
        assert!(tokenize("99999999999999999999").is_err());
        assert!(tokenize(r"'\u12'").is_err());
        assert!(tokenize("12abc").is_err());
    }
}
