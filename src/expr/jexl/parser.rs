//! A recursive-descent parser from tokens to an expression tree, with JEXL's precedence:
//! `||` < `&&` < `== !=` < `< <= > >= =~ !~ =^ !^ =$ !$` < `+ -` < `* / %` < unary `! -` <
//! member access, index and method calls.
//!
//! Recursion is bounded twice: nesting (parentheses, brackets, calls, unary operators) by
//! [`MAX_NESTING`], and the height of the tree (long `a && b && ...` chains) by [`MAX_HEIGHT`],
//! so neither parsing nor evaluating nor dropping the tree can overflow the stack.

use serde_json::Value;

use super::lexer::{Tok, Token};
use crate::expr::{ExprError, Reference, MAX_NESTING};

/// Tallest expression tree accepted.
pub(super) const MAX_HEIGHT: usize = 128;

/// A node of the tree and the byte offset it starts at (for error columns).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Expr {
    pub node: Node,
    pub offset: usize,
    height: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Literal(Value),
    Reference(Reference),
    Array(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    /// `a && b && ...`, flat so long chains do not make the tree tall.
    And(Vec<Expr>),
    /// `a || b || ...`, flat likewise.
    Or(Vec<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
    Method(Box<Expr>, Method, Vec<Expr>),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

impl Node {
    /// The direct children, for the height check and for walking the tree.
    pub(super) fn children(&self) -> Box<dyn Iterator<Item = &Expr> + '_> {
        match self {
            Self::Literal(_) | Self::Reference(_) => Box::new(std::iter::empty()),
            Self::Array(items) | Self::Call(_, items) | Self::And(items) | Self::Or(items) => {
                Box::new(items.iter())
            }
            Self::Not(e) | Self::Neg(e) | Self::Member(e, _) => Box::new(std::iter::once(&**e)),
            Self::Binary(_, a, b) | Self::Index(a, b) => Box::new([&**a, &**b].into_iter()),
            Self::Method(target, _, args) => Box::new(std::iter::once(&**target).chain(args)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Match => "=~",
            Self::NotMatch => "!~",
            Self::StartsWith => "=^",
            Self::NotStartsWith => "!^",
            Self::EndsWith => "=$",
            Self::NotEndsWith => "!$",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Rem => "%",
        }
    }
}

/// The functions of DESIGN §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    Empty,
    Size,
}

/// The methods of DESIGN §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Contains,
    StartsWith,
    EndsWith,
    Equals,
    EqualsIgnoreCase,
    ToLowerCase,
    ToUpperCase,
    Trim,
    Length,
    Matches,
    Split,
    Size,
}

const METHODS: [(&str, Method, usize); 12] = [
    ("contains", Method::Contains, 1),
    ("startsWith", Method::StartsWith, 1),
    ("endsWith", Method::EndsWith, 1),
    ("equals", Method::Equals, 1),
    ("equalsIgnoreCase", Method::EqualsIgnoreCase, 1),
    ("toLowerCase", Method::ToLowerCase, 0),
    ("toUpperCase", Method::ToUpperCase, 0),
    ("trim", Method::Trim, 0),
    ("length", Method::Length, 0),
    ("matches", Method::Matches, 1),
    ("split", Method::Split, 1),
    ("size", Method::Size, 0),
];

impl Method {
    pub(super) fn name(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m, _)| *m == self)
            .map_or("?", |(n, _, _)| n)
    }
}

pub(super) fn parse(text: &str, tokens: Vec<Token>) -> Result<Expr, ExprError> {
    let mut parser = Parser {
        text,
        tokens,
        pos: 0,
        depth: 0,
    };
    if parser.peek() == &Tok::Eof {
        return Err(parser.error_here("the expression is empty"));
    }
    let expr = parser.or()?;
    if parser.peek() != &Tok::Eof {
        let found = describe(parser.peek());
        return Err(parser.error_here(format!(
            "unexpected {found} after the end of the expression; expected an operator such as && or =="
        )));
    }
    Ok(expr)
}

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Literal(Value::String(_)) => "string".into(),
        Tok::Literal(v) => format!("'{v}'"),
        Tok::Reference(r) => format!("reference {r}"),
        Tok::Ident(name) => format!("name '{name}'"),
        Tok::Eof => "end of the expression".into(),
        other => format!("'{}'", symbol(other)),
    }
}

fn symbol(tok: &Tok) -> &'static str {
    match tok {
        Tok::And => "&&",
        Tok::Or => "||",
        Tok::Not => "!",
        Tok::Eq => "==",
        Tok::Ne => "!=",
        Tok::Lt => "<",
        Tok::Le => "<=",
        Tok::Gt => ">",
        Tok::Ge => ">=",
        Tok::Match => "=~",
        Tok::NotMatch => "!~",
        Tok::StartsWith => "=^",
        Tok::NotStartsWith => "!^",
        Tok::EndsWith => "=$",
        Tok::NotEndsWith => "!$",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::LBracket => "[",
        Tok::RBracket => "]",
        Tok::Comma => ",",
        Tok::Dot => ".",
        Tok::Literal(_) | Tok::Reference(_) | Tok::Ident(_) | Tok::Eof => "",
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    fn offset(&self) -> usize {
        self.tokens[self.pos].offset
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn error_here(&self, message: impl Into<String>) -> ExprError {
        ExprError::at(self.text, self.offset(), message)
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ExprError> {
        if *self.peek() == tok {
            self.advance();
            Ok(())
        } else {
            let found = describe(self.peek());
            Err(self.error_here(format!("expected {what}, found {found}")))
        }
    }

    /// Builds a node, refusing a tree taller than [`MAX_HEIGHT`].
    fn make(&self, node: Node, offset: usize) -> Result<Expr, ExprError> {
        let height = 1 + node.children().map(|c| c.height).max().unwrap_or(0);
        if height > MAX_HEIGHT {
            return Err(ExprError::at(
                self.text,
                offset,
                format!(
                    "the expression is too complex (more than {MAX_HEIGHT} levels of operators)"
                ),
            ));
        }
        Ok(Expr {
            node,
            offset,
            height,
        })
    }

    fn nest(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error_here(format!(
                "the expression nests deeper than {MAX_NESTING} levels"
            )));
        }
        Ok(())
    }

    fn unnest(&mut self) {
        self.depth -= 1;
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let first = self.and()?;
        if *self.peek() != Tok::Or {
            return Ok(first);
        }
        let offset = first.offset;
        let mut operands = vec![first];
        while *self.peek() == Tok::Or {
            self.advance();
            operands.push(self.and()?);
        }
        self.make(Node::Or(operands), offset)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let first = self.equality()?;
        if *self.peek() != Tok::And {
            return Ok(first);
        }
        let offset = first.offset;
        let mut operands = vec![first];
        while *self.peek() == Tok::And {
            self.advance();
            operands.push(self.equality()?);
        }
        self.make(Node::And(operands), offset)
    }

    fn binary_level(
        &mut self,
        next: fn(&mut Self) -> Result<Expr, ExprError>,
        op_of: fn(&Tok) -> Option<BinOp>,
    ) -> Result<Expr, ExprError> {
        let mut left = next(self)?;
        while let Some(op) = op_of(self.peek()) {
            self.advance();
            let right = next(self)?;
            let offset = left.offset;
            left = self.make(Node::Binary(op, Box::new(left), Box::new(right)), offset)?;
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, ExprError> {
        self.binary_level(Self::relational, |t| match t {
            Tok::Eq => Some(BinOp::Eq),
            Tok::Ne => Some(BinOp::Ne),
            _ => None,
        })
    }

    fn relational(&mut self) -> Result<Expr, ExprError> {
        self.binary_level(Self::additive, |t| match t {
            Tok::Lt => Some(BinOp::Lt),
            Tok::Le => Some(BinOp::Le),
            Tok::Gt => Some(BinOp::Gt),
            Tok::Ge => Some(BinOp::Ge),
            Tok::Match => Some(BinOp::Match),
            Tok::NotMatch => Some(BinOp::NotMatch),
            Tok::StartsWith => Some(BinOp::StartsWith),
            Tok::NotStartsWith => Some(BinOp::NotStartsWith),
            Tok::EndsWith => Some(BinOp::EndsWith),
            Tok::NotEndsWith => Some(BinOp::NotEndsWith),
            _ => None,
        })
    }

    fn additive(&mut self) -> Result<Expr, ExprError> {
        self.binary_level(Self::multiplicative, |t| match t {
            Tok::Plus => Some(BinOp::Add),
            Tok::Minus => Some(BinOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> Result<Expr, ExprError> {
        self.binary_level(Self::unary, |t| match t {
            Tok::Star => Some(BinOp::Mul),
            Tok::Slash => Some(BinOp::Div),
            Tok::Percent => Some(BinOp::Rem),
            _ => None,
        })
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let offset = self.offset();
        let wrap: fn(Box<Expr>) -> Node = match self.peek() {
            Tok::Not => Node::Not,
            Tok::Minus => Node::Neg,
            _ => return self.postfix(),
        };
        self.advance();
        self.nest()?;
        let operand = self.unary()?;
        self.unnest();
        self.make(wrap(Box::new(operand)), offset)
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut target = self.primary()?;
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.advance();
                    let name_offset = self.offset();
                    let Tok::Ident(name) = self.peek().clone() else {
                        let found = describe(self.peek());
                        return Err(self.error_here(format!(
                            "expected a method or property name after '.', found {found}"
                        )));
                    };
                    self.advance();
                    if *self.peek() == Tok::LParen {
                        let (method, arity) = METHODS
                            .iter()
                            .find(|(n, _, _)| *n == name)
                            .map(|(_, m, a)| (*m, *a))
                            .ok_or_else(|| {
                                let names: Vec<&str> = METHODS.iter().map(|(n, _, _)| *n).collect();
                                ExprError::at(
                                    self.text,
                                    name_offset,
                                    format!(
                                        "unknown method '{name}'; expected one of {}",
                                        names.join(", ")
                                    ),
                                )
                            })?;
                        let args = self.arguments(&name, arity, name_offset)?;
                        let offset = target.offset;
                        target = self.make(Node::Method(Box::new(target), method, args), offset)?;
                    } else {
                        let offset = target.offset;
                        target = self.make(Node::Member(Box::new(target), name), offset)?;
                    }
                }
                Tok::LBracket => {
                    self.advance();
                    self.nest()?;
                    let index = self.or()?;
                    self.unnest();
                    self.expect(Tok::RBracket, "']'")?;
                    let offset = target.offset;
                    target = self.make(Node::Index(Box::new(target), Box::new(index)), offset)?;
                }
                _ => return Ok(target),
            }
        }
    }

    /// `( a, b )` after a method or function name, with exactly `arity` arguments.
    fn arguments(
        &mut self,
        name: &str,
        arity: usize,
        name_offset: usize,
    ) -> Result<Vec<Expr>, ExprError> {
        self.expect(Tok::LParen, "'('")?;
        self.nest()?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                args.push(self.or()?);
                if *self.peek() == Tok::Comma {
                    self.advance();
                } else {
                    break;
                }
            }
        }
        self.unnest();
        self.expect(Tok::RParen, "')' or ','")?;
        if args.len() != arity {
            let plural = if arity == 1 { "" } else { "s" };
            return Err(ExprError::at(
                self.text,
                name_offset,
                format!(
                    "{name}() takes {arity} argument{plural}, {} given",
                    args.len()
                ),
            ));
        }
        Ok(args)
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let offset = self.offset();
        let token = self.advance();
        let leaf = |node| Expr {
            node,
            offset,
            height: 1,
        };
        match token.tok {
            Tok::Literal(v) => Ok(leaf(Node::Literal(v))),
            Tok::Reference(r) => Ok(leaf(Node::Reference(r))),
            Tok::LParen => {
                self.nest()?;
                let inner = self.or()?;
                self.unnest();
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::LBracket => {
                self.nest()?;
                let mut items = Vec::new();
                if *self.peek() != Tok::RBracket {
                    loop {
                        items.push(self.or()?);
                        if *self.peek() == Tok::Comma {
                            self.advance();
                        } else {
                            break;
                        }
                    }
                }
                self.unnest();
                self.expect(Tok::RBracket, "']' or ','")?;
                self.make(Node::Array(items), offset)
            }
            Tok::Ident(name) => {
                let function = match name.as_str() {
                    "empty" => Function::Empty,
                    "size" => Function::Size,
                    _ => {
                        return Err(ExprError::at(
                            self.text,
                            offset,
                            format!(
                                "unknown name '{}': read values with references such as <+trigger.payload.{}>; the functions are empty(x) and size(x)",
                                crate::domain::ids::truncate_for_message(&name),
                                crate::domain::ids::truncate_for_message(&name)
                            ),
                        ))
                    }
                };
                let args = self.arguments(&name, 1, offset)?;
                self.make(Node::Call(function, args), offset)
            }
            other => {
                self.pos = self.pos.saturating_sub(usize::from(other != Tok::Eof));
                let found = describe(&other);
                Err(ExprError::at(
                    self.text,
                    offset,
                    format!("expected a value, a reference or '(', found {found}"),
                ))
            }
        }
    }
}
