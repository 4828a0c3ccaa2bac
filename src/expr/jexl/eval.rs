//! Evaluates an expression tree over `serde_json::Value`s with JEXL's loose semantics.

use serde_json::Value;

use super::parser::{BinOp, Expr, Function, Method, Node};
use crate::expr::reference::Segment;
use crate::expr::regex::{compile, compile_uncached, Mode};
use crate::expr::value::{loose_eq, number_of, render, truthy, type_name, Num};
use crate::expr::Resolver;

/// Longest string an expression may build (by `+`), in bytes.
pub(super) const MAX_STRING_BYTES: usize = 4 << 20;

/// A failure while evaluating, at a byte offset of the expression.
#[derive(Debug)]
pub(super) struct Failure {
    pub offset: usize,
    pub message: String,
}

type Outcome = Result<Value, Failure>;

fn fail(at: &Expr, message: impl Into<String>) -> Failure {
    Failure {
        offset: at.offset,
        message: message.into(),
    }
}

/// How much work one evaluation may do, in units of roughly a byte handled: every node costs
/// one, a reference its value's size, a string method its text's length, and `split` its
/// pieces besides. It bounds the time and memory a hostile condition can take (a chain of
/// `<+trigger.payload.s>.split("")` on a 1 MiB payload took 12.5 s); legitimate conditions use a
/// tiny part of it.
pub(super) const MAX_WORK: usize = 32 << 20;

/// The work left to an evaluation.
pub(super) struct Budget(std::cell::Cell<usize>);

impl Budget {
    pub(super) fn new() -> Self {
        Self(std::cell::Cell::new(MAX_WORK))
    }

    /// Spends `units`, failing at `at` once the budget is gone.
    fn spend(&self, at: &Expr, units: usize) -> Result<(), Failure> {
        match self.0.get().checked_sub(units) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => {
                self.0.set(0);
                Err(fail(
                    at,
                    format!(
                        "the expression needs more work than one evaluation may do ({} MiB of values handled); it is treated as not matching",
                        MAX_WORK >> 20
                    ),
                ))
            }
        }
    }
}

/// Roughly how many bytes `value` holds.
fn weight(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(weight).sum::<usize>() + items.len(),
        Value::Object(map) => {
            map.iter().map(|(k, v)| k.len() + weight(v)).sum::<usize>() + map.len()
        }
        _ => 1,
    }
}

/// Evaluates `expr`. It recurses once per level of the tree (up to the parser's `MAX_HEIGHT`),
/// so this frame holds only the dispatch, and each kind of node's work, its operands' results
/// included, is in a function of its own: in a debug build every temporary of a function has a
/// slot of its own, and with all the arms here a level took 7.8 KiB of stack (1 MB for the
/// tallest tree the parser accepts).
pub(super) fn eval(expr: &Expr, ctx: &dyn Resolver, budget: &Budget) -> Outcome {
    budget.spend(expr, 1)?;
    match &expr.node {
        Node::Literal(v) => Ok(v.clone()),
        Node::Reference(r) => reference(expr, r, ctx, budget),
        Node::Array(items) => items
            .iter()
            .map(|e| eval(e, ctx, budget))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Node::Not(e) => eval(e, ctx, budget).map(|v| Value::Bool(!truthy(&v))),
        Node::Neg(e) => eval(e, ctx, budget).and_then(|v| negate(e, v)),
        Node::And(operands) => all(operands, ctx, budget),
        Node::Or(operands) => any(operands, ctx, budget),
        Node::Binary(op, a, b) => binary_node(expr, *op, a, b, ctx, budget),
        Node::Call(function, args) => eval(&args[0], ctx, budget).map(|v| apply(*function, &v)),
        Node::Method(target, method, args) => method_call(expr, target, *method, args, ctx, budget),
        Node::Member(target, name) => {
            eval(target, ctx, budget).map(|v| member(&v, &Segment::Key(name.clone())))
        }
        Node::Index(target, index) => index_node(target, index, ctx, budget),
    }
}

/// `a && b && …`: false at the first operand that is not truthy.
fn all(operands: &[Expr], ctx: &dyn Resolver, budget: &Budget) -> Outcome {
    for operand in operands {
        if !truthy(&eval(operand, ctx, budget)?) {
            return Ok(Value::Bool(false));
        }
    }
    Ok(Value::Bool(true))
}

/// `a || b || …`: true at the first operand that is truthy.
fn any(operands: &[Expr], ctx: &dyn Resolver, budget: &Budget) -> Outcome {
    for operand in operands {
        if truthy(&eval(operand, ctx, budget)?) {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

/// `a op b`, both operands evaluated first.
fn binary_node(
    expr: &Expr,
    op: BinOp,
    a: &Expr,
    b: &Expr,
    ctx: &dyn Resolver,
    budget: &Budget,
) -> Outcome {
    let literal = matches!(b.node, Node::Literal(_));
    let a = eval(a, ctx, budget)?;
    binary(expr, op, a, eval(b, ctx, budget)?, literal)
}

/// `target[index]`.
fn index_node(target: &Expr, index: &Expr, ctx: &dyn Resolver, budget: &Budget) -> Outcome {
    let v = eval(target, ctx, budget)?;
    Ok(index_into(&v, &eval(index, ctx, budget)?))
}

/// A reference's value, which spends its size.
fn reference(
    expr: &Expr,
    r: &crate::expr::reference::Reference,
    ctx: &dyn Resolver,
    budget: &Budget,
) -> Outcome {
    let value = ctx.resolve(r).unwrap_or(Value::Null);
    budget.spend(expr, weight(&value))?;
    Ok(value)
}

/// `-v`, failing at `e` for what is not a number.
fn negate(e: &Expr, v: Value) -> Outcome {
    match number_of(&v) {
        Some(Num::Int(i)) => Ok(i
            .checked_neg()
            .map_or_else(|| Value::from(-(i as f64)), Value::from)),
        Some(Num::Float(f)) => Ok(Num::Float(-f).to_value().unwrap_or(Value::Null)),
        None => Err(fail(e, format!("cannot negate {}", type_name(&v)))),
    }
}

/// A function applied to its argument.
fn apply(function: Function, arg: &Value) -> Value {
    match function {
        Function::Empty => Value::Bool(match arg {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Bool(_) | Value::Number(_) => false,
        }),
        Function::Size => Value::from(size(arg)),
    }
}

/// `target.method(args)`: the receiver and arguments evaluated, the work spent, then the call.
fn method_call(
    expr: &Expr,
    target: &Expr,
    method: Method,
    args: &[Expr],
    ctx: &dyn Resolver,
    budget: &Budget,
) -> Outcome {
    let receiver = eval(target, ctx, budget)?;
    let literal = args.iter().all(|a| matches!(a.node, Node::Literal(_)));
    let args = args
        .iter()
        .map(|a| eval(a, ctx, budget))
        .collect::<Result<Vec<_>, _>>()?;
    if let Value::String(text) = &receiver {
        budget.spend(expr, text.len())?;
    }
    let value = call(expr, target, receiver, method, &args, literal)?;
    if let Value::Array(pieces) = &value {
        // split: each piece is an allocation of its own.
        budget.spend(expr, pieces.len() * 32)?;
    }
    Ok(value)
}

/// `v[i]`: an array's item by a non-negative integer, otherwise a member by `i`'s text.
fn index_into(v: &Value, i: &Value) -> Value {
    let segment = match (v, i) {
        (Value::Array(_), _) => match number_of(i) {
            Some(Num::Int(n)) if n >= 0 => Segment::Index(n as usize),
            _ => return Value::Null,
        },
        _ => Segment::Key(render(i).into_owned()),
    };
    member(v, &segment)
}

fn member(value: &Value, segment: &Segment) -> Value {
    crate::expr::reference::lookup(value, std::slice::from_ref(segment))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `size(x)`: characters of a string, items of an array or object, 0 for null; a number or
/// boolean reads as its text.
fn size(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        other => render(other).chars().count(),
    }
}

/// A regex: cached when the pattern is written in the expression, compiled for this use only when
/// it comes from the webhook.
fn regex_for(
    at: &Expr,
    pattern: &str,
    mode: Mode,
    literal: bool,
) -> Result<std::sync::Arc<regex::Regex>, Failure> {
    let compiled = if literal {
        compile(pattern, mode)
    } else {
        compile_uncached(pattern, mode)
    };
    compiled.map_err(|e| fail(at, e))
}

/// `literal_right`: the right operand is written in the expression (its regex may be cached).
fn binary(at: &Expr, op: BinOp, a: Value, b: Value, literal_right: bool) -> Outcome {
    let bool = |x: bool| Ok(Value::Bool(x));
    match op {
        BinOp::Eq => bool(loose_eq(&a, &b)),
        BinOp::Ne => bool(!loose_eq(&a, &b)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let order = compare(at, op, &a, &b)?;
            bool(match op {
                BinOp::Lt => order.is_lt(),
                BinOp::Le => order.is_le(),
                BinOp::Gt => order.is_gt(),
                _ => order.is_ge(),
            })
        }
        BinOp::Match => matches_op(at, &a, &b, literal_right).map(Value::Bool),
        BinOp::NotMatch => matches_op(at, &a, &b, literal_right).map(|m| Value::Bool(!m)),
        BinOp::StartsWith | BinOp::NotStartsWith | BinOp::EndsWith | BinOp::NotEndsWith => {
            if a.is_null() || b.is_null() {
                return bool(matches!(op, BinOp::NotStartsWith | BinOp::NotEndsWith));
            }
            let (text, affix) = (render(&a), render(&b));
            bool(match op {
                BinOp::StartsWith => text.starts_with(&*affix),
                BinOp::NotStartsWith => !text.starts_with(&*affix),
                BinOp::EndsWith => text.ends_with(&*affix),
                _ => !text.ends_with(&*affix),
            })
        }
        BinOp::Add => add(at, a, b),
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => arithmetic(at, op, &a, &b),
    }
}

/// Order for `< <= > >=`: numeric when either side is a number (the other must read as one),
/// lexical between two strings; anything else cannot be ordered.
fn compare(at: &Expr, op: BinOp, a: &Value, b: &Value) -> Result<std::cmp::Ordering, Failure> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.as_str().cmp(y.as_str())),
        (Value::Number(_), _) | (_, Value::Number(_)) => match (number_of(a), number_of(b)) {
            (Some(x), Some(y)) => Ok(x.order(y)),
            _ => Err(not_comparable(at, op, a, b)),
        },
        _ => Err(not_comparable(at, op, a, b)),
    }
}

fn not_comparable(at: &Expr, op: BinOp, a: &Value, b: &Value) -> Failure {
    let shown = |v: &Value| match v {
        Value::String(s) => format!("string \"{}\"", crate::domain::ids::truncate_for_message(s)),
        other => type_name(other).to_owned(),
    };
    fail(
        at,
        format!("cannot compare {} {} {}", shown(a), op.symbol(), shown(b)),
    )
}

/// `=~`: membership when the right side is an array (or a key of an object), otherwise a full
/// regex match of the left side's text; `null` on the left matches nothing.
fn matches_op(at: &Expr, a: &Value, b: &Value, literal: bool) -> Result<bool, Failure> {
    match b {
        Value::Array(items) => Ok(items.iter().any(|item| loose_eq(a, item))),
        Value::Object(map) => Ok(!a.is_null() && map.contains_key(render(a).as_ref())),
        Value::String(pattern) => {
            if a.is_null() {
                return Ok(false);
            }
            let regex = regex_for(at, pattern, Mode::FullMatch, literal)?;
            Ok(regex.is_match(&render(a)))
        }
        other => Ok(loose_eq(a, other)),
    }
}

/// `+`: numbers add; two strings concatenate; a string and a number add when the string reads
/// as a number and concatenate otherwise; `null` counts as nothing.
fn add(at: &Expr, a: Value, b: Value) -> Outcome {
    let concat = |x: &str, y: &str| {
        if x.len() + y.len() > MAX_STRING_BYTES {
            return Err(fail(
                at,
                format!("the string would be longer than {MAX_STRING_BYTES} bytes"),
            ));
        }
        Ok(Value::String(format!("{x}{y}")))
    };
    match (&a, &b) {
        (Value::Null, Value::Null) => Err(fail(at, "cannot add null to null")),
        (Value::Null, other) | (other, Value::Null) if !other.is_array() && !other.is_object() => {
            Ok(other.clone())
        }
        (Value::String(x), Value::String(y)) => concat(x, y),
        (Value::Number(_) | Value::String(_), Value::Number(_) | Value::String(_)) => {
            match (number_of(&a), number_of(&b)) {
                (Some(x), Some(y)) => numeric(at, BinOp::Add, x, y),
                _ => concat(&render(&a), &render(&b)),
            }
        }
        _ => Err(fail(
            at,
            format!("cannot add {} and {}", type_name(&a), type_name(&b)),
        )),
    }
}

fn arithmetic(at: &Expr, op: BinOp, a: &Value, b: &Value) -> Outcome {
    match (number_of(a), number_of(b)) {
        (Some(x), Some(y)) => numeric(at, op, x, y),
        _ => Err(fail(
            at,
            format!(
                "'{}' needs numbers, got {} and {}",
                op.symbol(),
                type_name(a),
                type_name(b)
            ),
        )),
    }
}

/// Integer arithmetic when both sides are whole (integer division, as in JEXL), falling back to
/// floats on overflow; division by zero is an error.
fn numeric(at: &Expr, op: BinOp, x: Num, y: Num) -> Outcome {
    let result = match (x, y) {
        (Num::Int(a), Num::Int(b)) => {
            if matches!(op, BinOp::Div | BinOp::Rem) && b == 0 {
                return Err(fail(at, "division by zero"));
            }
            let exact = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div => a.checked_div(b),
                _ => a.checked_rem(b),
            };
            match exact {
                Some(n) => Num::Int(n),
                None => float_op(op, a as f64, b as f64),
            }
        }
        (a, b) => {
            if matches!(op, BinOp::Div | BinOp::Rem) && b.as_f64() == 0.0 {
                return Err(fail(at, "division by zero"));
            }
            float_op(op, a.as_f64(), b.as_f64())
        }
    };
    result
        .to_value()
        .ok_or_else(|| fail(at, "the result is not a finite number"))
}

fn float_op(op: BinOp, a: f64, b: f64) -> Num {
    Num::Float(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        _ => a % b,
    })
}

/// `literal`: the arguments are written in the expression (a regex argument may be cached).
fn call(
    at: &Expr,
    target: &Expr,
    receiver: Value,
    method: Method,
    args: &[Value],
    literal: bool,
) -> Outcome {
    let name = method.name();
    if receiver.is_null() {
        let hint = match &target.node {
            Node::Reference(r) => format!(" ({r} is missing)"),
            _ => String::new(),
        };
        return Err(fail(at, format!("cannot call .{name}() on null{hint}")));
    }
    // Methods of arrays (and objects, for size).
    match (&receiver, method) {
        (Value::Array(items), Method::Contains) => {
            return Ok(Value::Bool(items.iter().any(|i| loose_eq(i, &args[0]))))
        }
        (Value::Array(_) | Value::Object(_), Method::Size | Method::Length) => {
            return Ok(Value::from(size(&receiver)))
        }
        (Value::Array(_) | Value::Object(_), _) => {
            return Err(fail(
                at,
                format!(
                    ".{name}() is a string method; the value is {}",
                    type_name(&receiver)
                ),
            ))
        }
        _ => {}
    }
    let text = render(&receiver);
    let arg = |i: usize| -> Result<std::borrow::Cow<'_, str>, Failure> {
        match &args[i] {
            Value::Null => Err(fail(at, format!(".{name}() got null as its argument"))),
            v => Ok(render(v)),
        }
    };
    let value = match method {
        Method::Contains => Value::Bool(text.contains(&*arg(0)?)),
        Method::StartsWith => Value::Bool(text.starts_with(&*arg(0)?)),
        Method::EndsWith => Value::Bool(text.ends_with(&*arg(0)?)),
        Method::Equals => Value::Bool(!args[0].is_null() && text == arg(0)?),
        Method::EqualsIgnoreCase => {
            Value::Bool(!args[0].is_null() && text.to_lowercase() == arg(0)?.to_lowercase())
        }
        Method::ToLowerCase => Value::String(text.to_lowercase()),
        Method::ToUpperCase => Value::String(text.to_uppercase()),
        Method::Trim => Value::String(text.trim().to_owned()),
        Method::Length | Method::Size => Value::from(text.chars().count()),
        Method::Matches => {
            let regex = regex_for(at, &arg(0)?, Mode::FullMatch, literal)?;
            Value::Bool(regex.is_match(&text))
        }
        Method::Split => {
            // Java's String.split: the separator is a regex and trailing empty pieces are dropped.
            let regex = regex_for(at, &arg(0)?, Mode::Search, literal)?;
            let mut pieces: Vec<Value> = regex
                .split(&text)
                .map(|p| Value::String(p.to_owned()))
                .collect();
            if text.is_empty() {
                pieces = vec![Value::String(String::new())];
            } else {
                while pieces.last().is_some_and(|p| p.as_str() == Some("")) {
                    pieces.pop();
                }
            }
            Value::Array(pieces)
        }
    };
    Ok(value)
}
