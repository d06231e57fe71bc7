//! Machine-count expressions: compiled once at start-up with meval, evaluated every cycle with
//! the collected metrics as variables, with the Go program's result rules.
//!
//! meval has no comparisons, ternaries or boolean operators, which Go users write in expr-lang;
//! each has a function here (`if`, `gt`, `and`, …) and the start-up error for such a construct
//! says which function to write instead.

use std::collections::BTreeMap;
use std::fmt;

use meval::tokenizer::Token;
use meval::{ContextProvider, FuncEvalError};

use crate::config::{Config, CountExprs};
use crate::plan::{Bounds, TargetCounts};

/// Collected metric values by metric name.
pub type MetricValues = BTreeMap<String, f64>;

/// A compiled, non-blank expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    rpn: meval::Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprError {
    Syntax {
        expr: String,
        detail: String,
    },
    Unsupported {
        expr: String,
        construct: &'static str,
        instead: &'static str,
    },
    UnknownFunction {
        expr: String,
        name: String,
    },
    WrongArgumentCount {
        expr: String,
        name: String,
        got: usize,
    },
    UnknownVariable {
        name: String,
        known: Vec<String>,
    },
    NaN,
    Inf,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExprError::Syntax { expr, detail } => {
                write!(f, "invalid expression {expr:?}: {detail}")
            }
            ExprError::Unsupported {
                expr,
                construct,
                instead,
            } => write!(
                f,
                "expression {expr:?} uses {construct}, which is not supported here: {instead}"
            ),
            ExprError::UnknownFunction { expr, name } => write!(
                f,
                "expression {expr:?} calls unknown function {name:?}; available: {}",
                function_names()
            ),
            ExprError::WrongArgumentCount { expr, name, got } => {
                let func = FUNCTIONS.iter().find(|x| x.name == name);
                let usage = func.map_or("", |x| x.usage);
                write!(
                    f,
                    "expression {expr:?} calls {name} with {got} argument(s); write {usage}"
                )
            }
            ExprError::UnknownVariable { name, known } if known.is_empty() => write!(
                f,
                "unknown variable {name:?}: no metrics are collected; add a metric-collectors entry with metric-name: {name}"
            ),
            ExprError::UnknownVariable { name, known } => write!(
                f,
                "unknown variable {name:?}; collected metrics are: {}",
                known.join(", ")
            ),
            // The Go program's exact texts.
            ExprError::NaN => f.write_str("expression returned NaN"),
            ExprError::Inf => f.write_str("expression returned Inf"),
        }
    }
}

impl std::error::Error for ExprError {}

impl Expression {
    /// Compiles `source`; a blank expression is "not set" (`Ok(None)`).
    pub fn compile(source: &str) -> Result<Option<Expression>, ExprError> {
        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if let Some((construct, instead)) = unsupported_construct(trimmed) {
            return Err(ExprError::Unsupported {
                expr: trimmed.to_string(),
                construct,
                instead,
            });
        }
        let rpn: meval::Expr = trimmed.parse().map_err(|e| ExprError::Syntax {
            expr: trimmed.to_string(),
            detail: describe_meval_error(&e),
        })?;
        for token in rpn.iter() {
            if let Token::Func(name, args) = token {
                let got = args.unwrap_or(0);
                let func = FUNCTIONS.iter().find(|f| f.name == name).ok_or_else(|| {
                    ExprError::UnknownFunction {
                        expr: trimmed.to_string(),
                        name: name.clone(),
                    }
                })?;
                if !func.accepts(got) {
                    return Err(ExprError::WrongArgumentCount {
                        expr: trimmed.to_string(),
                        name: name.clone(),
                        got,
                    });
                }
            }
        }
        Ok(Some(Expression {
            source: trimmed.to_string(),
            rpn,
        }))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the expression reads, each once.
    pub fn variables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rpn
            .iter()
            .filter_map(|t| match t {
                Token::Var(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Fails on the first variable that is not one of `known` (the configured metric names).
    pub fn check_variables(&self, known: &[&str]) -> Result<(), ExprError> {
        match self.variables().into_iter().find(|v| !known.contains(v)) {
            Some(name) => Err(ExprError::UnknownVariable {
                name: name.to_string(),
                known: known.iter().map(|s| s.to_string()).collect(),
            }),
            None => Ok(()),
        }
    }

    /// Evaluates to a machine count: rounded half away from zero, negative → 0, NaN and ±Inf
    /// are errors. Values beyond `u32::MAX` saturate (the Go program wrapped them negative).
    pub fn eval(&self, metrics: &MetricValues) -> Result<u32, ExprError> {
        let value = self
            .rpn
            .eval_with_context(Scope(metrics))
            .map_err(|e| match e {
                meval::Error::UnknownVariable(name) => ExprError::UnknownVariable {
                    name,
                    known: metrics.keys().cloned().collect(),
                },
                other => ExprError::Syntax {
                    expr: self.source.clone(),
                    detail: other.to_string(),
                },
            })?
            .round();
        if value.is_nan() {
            Err(ExprError::NaN)
        } else if value.is_infinite() {
            Err(ExprError::Inf)
        } else {
            Ok(value.clamp(0.0, u32::MAX as f64) as u32)
        }
    }
}

/// The four target expressions of a config, compiled.
#[derive(Debug, Clone, Default)]
pub struct TargetExprs {
    pub min_created: Option<Expression>,
    pub max_created: Option<Expression>,
    pub min_started: Option<Expression>,
    pub max_started: Option<Expression>,
}

/// A start-up expression error, naming the config key.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprConfigError {
    pub key: String,
    pub error: ExprError,
}

impl fmt::Display for ExprConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.error)
    }
}

impl std::error::Error for ExprConfigError {}

/// Which target failed to evaluate, worded as the Go `eval` command words it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetError {
    pub which: &'static str,
    pub error: ExprError,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot calculate {} machine count: {}",
            self.which, self.error
        )
    }
}

impl std::error::Error for TargetError {}

impl TargetExprs {
    /// Compiles the config's expressions and checks every variable is a configured metric.
    pub fn compile(config: &Config) -> Result<TargetExprs, ExprConfigError> {
        let metrics: Vec<&str> = config
            .metric_collectors
            .iter()
            .map(|c| c.metric_name.as_str())
            .collect();
        let (created_min, created_max) = compile_pair(
            config.created_counts(),
            &config.created_machine_count,
            "created",
            &metrics,
        )?;
        let (started_min, started_max) = compile_pair(
            config.started_counts(),
            &config.started_machine_count,
            "started",
            &metrics,
        )?;
        Ok(TargetExprs {
            min_created: created_min,
            max_created: created_max,
            min_started: started_min,
            max_started: started_max,
        })
    }

    /// Evaluates in the Go order (min/max created, then min/max started); created bounds are
    /// raised to at least 1, since a machine must remain to clone from.
    pub fn evaluate(&self, metrics: &MetricValues) -> Result<TargetCounts, TargetError> {
        let eval =
            |e: &Option<Expression>, which: &'static str| -> Result<Option<u32>, TargetError> {
                e.as_ref()
                    .map(|e| e.eval(metrics))
                    .transpose()
                    .map_err(|error| TargetError { which, error })
            };
        let at_least_one = |v: Option<u32>| v.map(|n| n.max(1));
        Ok(TargetCounts {
            created: Bounds {
                min: at_least_one(eval(&self.min_created, "min created")?),
                max: at_least_one(eval(&self.max_created, "max created")?),
            },
            started: Bounds {
                min: eval(&self.min_started, "min started")?,
                max: eval(&self.max_started, "max started")?,
            },
        })
    }
}

type CompiledPair = (Option<Expression>, Option<Expression>);

fn compile_pair(
    counts: CountExprs,
    single: &str,
    word: &str,
    metrics: &[&str],
) -> Result<CompiledPair, ExprConfigError> {
    let compile = |source: &str, key: String| {
        Expression::compile(source)
            .and_then(|e| {
                if let Some(e) = &e {
                    e.check_variables(metrics)?;
                }
                Ok(e)
            })
            .map_err(|error| ExprConfigError { key, error })
    };
    if !single.trim().is_empty() {
        let e = compile(single, format!("{word}-machine-count"))?;
        return Ok((e.clone(), e));
    }
    Ok((
        compile(counts.min, format!("min-{word}-machine-count"))?,
        compile(counts.max, format!("max-{word}-machine-count"))?,
    ))
}

/// A function available to expressions.
struct Function {
    name: &'static str,
    min_args: usize,
    max_args: usize,
    usage: &'static str,
    eval: fn(&[f64]) -> f64,
}

impl Function {
    fn accepts(&self, n: usize) -> bool {
        (self.min_args..=self.max_args).contains(&n)
    }
}

fn truth(x: f64) -> bool {
    x != 0.0 && !x.is_nan()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

const MANY: usize = usize::MAX;

/// expr-lang's numeric builtins, then the replacements for its operators.
const FUNCTIONS: &[Function] = &[
    Function {
        name: "abs",
        min_args: 1,
        max_args: 1,
        usage: "abs(x)",
        eval: |a| a[0].abs(),
    },
    Function {
        name: "ceil",
        min_args: 1,
        max_args: 1,
        usage: "ceil(x)",
        eval: |a| a[0].ceil(),
    },
    Function {
        name: "floor",
        min_args: 1,
        max_args: 1,
        usage: "floor(x)",
        eval: |a| a[0].floor(),
    },
    Function {
        name: "round",
        min_args: 1,
        max_args: 1,
        usage: "round(x)",
        eval: |a| a[0].round(),
    },
    Function {
        name: "int",
        min_args: 1,
        max_args: 1,
        usage: "int(x)",
        eval: |a| a[0].trunc(),
    },
    Function {
        name: "min",
        min_args: 1,
        max_args: MANY,
        usage: "min(a, b, ...)",
        eval: |a| a.iter().copied().fold(f64::INFINITY, f64::min),
    },
    Function {
        name: "max",
        min_args: 1,
        max_args: MANY,
        usage: "max(a, b, ...)",
        eval: |a| a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    },
    Function {
        name: "clamp",
        min_args: 3,
        max_args: 3,
        usage: "clamp(x, lo, hi)",
        eval: |a| a[0].max(a[1]).min(a[2]),
    },
    Function {
        name: "if",
        min_args: 3,
        max_args: 3,
        usage: "if(cond, then, else)",
        eval: |a| if truth(a[0]) { a[1] } else { a[2] },
    },
    Function {
        name: "gt",
        min_args: 2,
        max_args: 2,
        usage: "gt(a, b)",
        eval: |a| flag(a[0] > a[1]),
    },
    Function {
        name: "ge",
        min_args: 2,
        max_args: 2,
        usage: "ge(a, b)",
        eval: |a| flag(a[0] >= a[1]),
    },
    Function {
        name: "lt",
        min_args: 2,
        max_args: 2,
        usage: "lt(a, b)",
        eval: |a| flag(a[0] < a[1]),
    },
    Function {
        name: "le",
        min_args: 2,
        max_args: 2,
        usage: "le(a, b)",
        eval: |a| flag(a[0] <= a[1]),
    },
    Function {
        name: "eq",
        min_args: 2,
        max_args: 2,
        usage: "eq(a, b)",
        eval: |a| flag(a[0] == a[1]),
    },
    Function {
        name: "ne",
        min_args: 2,
        max_args: 2,
        usage: "ne(a, b)",
        eval: |a| flag(a[0] != a[1]),
    },
    Function {
        name: "and",
        min_args: 2,
        max_args: MANY,
        usage: "and(a, b, ...)",
        eval: |a| flag(a.iter().all(|x| truth(*x))),
    },
    Function {
        name: "or",
        min_args: 2,
        max_args: MANY,
        usage: "or(a, b, ...)",
        eval: |a| flag(a.iter().any(|x| truth(*x))),
    },
    Function {
        name: "not",
        min_args: 1,
        max_args: 1,
        usage: "not(x)",
        eval: |a| flag(!truth(a[0])),
    },
];

fn function_names() -> String {
    FUNCTIONS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Metric values and the function table, for meval.
struct Scope<'a>(&'a MetricValues);

impl ContextProvider for Scope<'_> {
    fn get_var(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    fn eval_func(&self, name: &str, args: &[f64]) -> Result<f64, FuncEvalError> {
        let f = FUNCTIONS
            .iter()
            .find(|f| f.name == name)
            .ok_or(FuncEvalError::UnknownFunction)?;
        if !f.accepts(args.len()) {
            return Err(FuncEvalError::NumberArgs(f.min_args));
        }
        Ok((f.eval)(args))
    }
}

const TERNARY: (&str, &str) = (
    "the ternary operator \"cond ? a : b\"",
    "write if(cond, a, b), e.g. if(gt(queue_depth, 0), 2, 0)",
);

/// The first expr-lang construct meval cannot parse, with what to write instead.
fn unsupported_construct(s: &str) -> Option<(&'static str, &'static str)> {
    // The ternary is the outermost construct of `a > 0 ? 2 : 0`: report it, not the `>`.
    if s.replace("??", "").contains('?') {
        return Some(TERNARY);
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let two = s.get(i..i + 2).unwrap_or("");
        let found = match two {
            "??" => Some((
                "the \"??\" operator",
                "metrics are never nil; remove \"?? default\"",
            )),
            ">=" => Some(("the \">=\" operator", "write ge(a, b)")),
            "<=" => Some(("the \"<=\" operator", "write le(a, b)")),
            "==" => Some(("the \"==\" operator", "write eq(a, b)")),
            "!=" => Some(("the \"!=\" operator", "write ne(a, b)")),
            "&&" => Some(("the \"&&\" operator", "write and(a, b)")),
            "||" => Some(("the \"||\" operator", "write or(a, b)")),
            "**" => Some(("the \"**\" operator", "write a ^ b for powers")),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
        let c = b[i];
        let found = match c {
            b'?' | b':' => Some(TERNARY),
            b'>' => Some(("the \">\" operator", "write gt(a, b)")),
            b'<' => Some(("the \"<\" operator", "write lt(a, b)")),
            b'!' => Some(("the \"!\" operator", "write not(x)")),
            b'=' => Some(("\"=\"", "compare with eq(a, b)")),
            b'"' | b'\'' | b'`' => Some((
                "a string literal",
                "expressions work on numbers only; use metric names and numbers",
            )),
            b'[' | b']' => Some((
                "an array",
                "use min(a, b, ...) or max(a, b, ...) on numbers",
            )),
            b'|' => Some(("a pipe", "call functions directly, e.g. ceil(x)")),
            b'.' if !(i > 0 && b[i - 1].is_ascii_digit()
                || i + 1 < b.len() && b[i + 1].is_ascii_digit()) =>
            {
                Some(("member access \".\"", "use the metric's name as collected"))
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = s[i..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map_or(s.len(), |n| i + n);
                let word = &s[i..end];
                let called = s[end..].trim_start().starts_with('(');
                let found = unsupported_word(word, called);
                if found.is_some() {
                    return found;
                }
                i = end;
                continue;
            }
            c if c.is_ascii_digit() || b" \t\r\n+-*/%^(),.".contains(&c) => None,
            _ => Some((
                "a character that is not part of an arithmetic expression",
                "use numbers, metric names, + - * / % ^, parentheses and functions",
            )),
        };
        if found.is_some() {
            return found;
        }
        i += 1;
    }
    None
}

fn unsupported_word(word: &str, called: bool) -> Option<(&'static str, &'static str)> {
    match (word, called) {
        ("and", false) => Some(("the \"and\" operator", "write and(a, b)")),
        ("or", false) => Some(("the \"or\" operator", "write or(a, b)")),
        ("not", false) => Some(("the \"not\" operator", "write not(x)")),
        ("true" | "false", _) => Some(("a boolean literal", "write 1 for true and 0 for false")),
        ("nil", _) => Some(("nil", "metrics always have a value; remove the nil check")),
        ("in" | "matches" | "contains" | "startsWith" | "endsWith", false) => Some((
            "a collection or string operator",
            "expressions work on numbers only; compare with eq(a, b)",
        )),
        ("let", false) => Some(("a let binding", "repeat the sub-expression instead")),
        _ => None,
    }
}

fn describe_meval_error(e: &meval::Error) -> String {
    use meval::{ParseError, RPNError};
    match e {
        meval::Error::ParseError(ParseError::UnexpectedToken(i)) => {
            format!("unexpected input at character {}", i + 1)
        }
        meval::Error::ParseError(ParseError::MissingRParen(n)) => {
            format!(
                "missing {n} closing parenthes{}",
                if *n == 1 { "is" } else { "es" }
            )
        }
        meval::Error::ParseError(ParseError::MissingArgument) => {
            "incomplete expression: an operand is missing at the end".to_string()
        }
        meval::Error::RPNError(RPNError::MismatchedLParen(_) | RPNError::MismatchedRParen(_)) => {
            "unbalanced parentheses".to_string()
        }
        meval::Error::RPNError(RPNError::UnexpectedComma(_)) => {
            "a comma outside a function call".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
