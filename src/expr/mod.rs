//! Expressions (DESIGN §5): the `<+...>` references and the JEXL subset that trigger conditions,
//! runtime input and pipeline steps are written in.
//!
//! Everything here is pure and bounded: a reference or an expression is parsed once (when the
//! trigger or pipeline is saved, and again when it is loaded into memory), and evaluating it reads
//! values through a [`Resolver`], never splices text into other text that is parsed again. An
//! expression is at most [`MAX_EXPRESSION_BYTES`] long, nests at most [`MAX_NESTING`] deep, and
//! regexes are compiled with a size limit and cached ([`regex`]), so neither a hostile expression
//! nor a hostile payload can hang or crash the server.
//!
//! - [`reference`]: `<+trigger.payload.a[0]['b-c']>` and the other reference forms.
//! - [`template`]: text with references in it, rendered to a string (condition keys, inputs).
//! - [`jexl`]: the tokenizer, parser and evaluator of the JEXL condition.
//! - [`value`]: how JSON values render as text and compare loosely, shared by both.
//! - [`context`]: the trigger context a webhook is evaluated against.
//! - [`projection`]: reads only the referenced parts of a JSON body.

pub mod context;
pub mod jexl;
pub mod projection;
pub mod reference;
pub mod regex;
pub mod template;
pub mod value;

use std::fmt;

use serde_json::Value;

pub use reference::Reference;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of parentheses, brackets, calls and unary operators.
pub const MAX_NESTING: usize = 64;

/// A problem with an expression's text, found when it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// What is wrong, without the position.
    pub message: String,
    /// 1-based column (in characters) where the problem starts.
    pub column: usize,
}

impl ExprError {
    pub(crate) fn at(text: &str, byte_offset: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            column: column_of(text, byte_offset),
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl std::error::Error for ExprError {}

/// The 1-based character column of a byte offset (clamped to the text).
pub(crate) fn column_of(text: &str, byte_offset: usize) -> usize {
    let mut end = byte_offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().count() + 1
}

/// Supplies the value behind each reference while an expression is evaluated.
pub trait Resolver {
    /// The value of `reference`, or `None` when it does not exist (a missing payload path, an
    /// absent header, a value that is not known in this context).
    fn resolve(&self, reference: &Reference) -> Option<Value>;
}
