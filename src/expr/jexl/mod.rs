//! The JEXL condition language of DESIGN §5: a subset of Apache Commons JEXL 3.
//!
//! Literals (`"x"`, `'x'`, `42`, `1.5`, `true`, `false`, `null`, `[a, b]`); `<+...>` references;
//! `== != < <= > >=` with JEXL's loose equality; `&& || !` and `and or not`; `=~ !~` (full regex
//! match, or membership when the right side is an array); `=^ !^ =$ !$`; `+ - * / %`;
//! parentheses; member access `.name` and `[index]`; string methods `contains startsWith endsWith
//! equals equalsIgnoreCase toLowerCase toUpperCase trim length matches split`; array methods
//! `contains size`; functions `empty(x)` and `size(x)`. Nothing else: no assignment, loops,
//! `new`, or names outside the references.
//!
//! Java semantics kept on purpose for Harness compatibility: `matches` and `=~` need the whole
//! string to match, `split` takes a regex and drops trailing empty pieces, integer division
//! truncates. `length()` counts characters (Java counts UTF-16 units).

mod eval;
mod lexer;
mod parser;

use serde_json::Value;

use super::regex::{self, Mode};
use super::{ExprError, Reference, Resolver, MAX_EXPRESSION_BYTES};

/// A compiled JEXL expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Jexl {
    source: String,
    root: parser::Expr,
}

/// How evaluating a condition went.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It evaluated to `true` or `false`.
    Bool(bool),
    /// It evaluated to something that is not a boolean.
    NotBoolean(Value),
    /// Evaluation failed (a method called on null, a bad regex from the payload, ...).
    Error(ExprError),
}

impl Jexl {
    /// Parses `text`; the error gives the column.
    pub fn compile(text: &str) -> Result<Self, ExprError> {
        if text.len() > MAX_EXPRESSION_BYTES {
            return Err(ExprError::at(
                text,
                0,
                format!(
                    "the expression is {} bytes long; at most {MAX_EXPRESSION_BYTES} are allowed",
                    text.len()
                ),
            ));
        }
        let tokens = lexer::tokenize(text)?;
        let root = parser::parse(text, tokens)?;
        let jexl = Self {
            source: text.to_owned(),
            root,
        };
        jexl.check_literal_regexes()?;
        Ok(jexl)
    }

    /// Regexes written in the expression (`x =~ "re"`, `.matches("re")`, `.split("re")`) must
    /// compile; the error points at the pattern.
    fn check_literal_regexes(&self) -> Result<(), ExprError> {
        use parser::{BinOp, Method, Node};
        let mut stack = vec![&self.root];
        while let Some(expr) = stack.pop() {
            let pattern = match &expr.node {
                Node::Binary(BinOp::Match | BinOp::NotMatch, _, right) => {
                    Some((&**right, Mode::FullMatch))
                }
                Node::Method(_, Method::Matches, args) => Some((&args[0], Mode::FullMatch)),
                Node::Method(_, Method::Split, args) => Some((&args[0], Mode::Search)),
                _ => None,
            };
            if let Some((at, mode)) = pattern {
                if let parser::Node::Literal(Value::String(text)) = &at.node {
                    regex::check(text, mode)
                        .map_err(|e| ExprError::at(&self.source, at.offset, e))?;
                }
            }
            stack.extend(expr.node.children());
        }
        Ok(())
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every reference in the expression, in order of appearance.
    pub fn references(&self) -> Vec<&Reference> {
        let mut found = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(expr) = stack.pop() {
            if let parser::Node::Reference(r) = &expr.node {
                found.push(r);
            }
            let children: Vec<_> = expr.node.children().collect();
            stack.extend(children.into_iter().rev());
        }
        found
    }

    /// Evaluates the expression to a value; the error gives the column where it failed.
    pub fn evaluate(&self, resolver: &dyn Resolver) -> Result<Value, ExprError> {
        eval::eval(&self.root, resolver, &eval::Budget::new())
            .map_err(|f| ExprError::at(&self.source, f.offset, f.message))
    }

    /// Evaluates the expression as a condition.
    pub fn verdict(&self, resolver: &dyn Resolver) -> Verdict {
        match self.evaluate(resolver) {
            Ok(Value::Bool(b)) => Verdict::Bool(b),
            Ok(other) => Verdict::NotBoolean(other),
            Err(e) => Verdict::Error(e),
        }
    }
}
#[cfg(test)]
mod tests;
