//! Machine-count expressions: compiled once at start-up with meval, evaluated every cycle with
//! the collected metrics as variables, with the Go program's result rules.
//!
//! meval has no comparisons, ternaries or boolean operators, which Go users write in expr-lang;
//! each has a function here (`if`, `gt`, `and`, …) and the start-up error for such a construct
//! says which function to write instead.

use std::collections::BTreeMap;
use std::fmt;

mod functions;
mod unsupported;

use meval::tokenizer::Token;
use meval::{ContextProvider, FuncEvalError};

use functions::{FUNCTIONS, function_names};
use unsupported::unsupported_construct;

use crate::config::{Count, CountExpr, GroupConfig};
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
            ExprError::UnknownVariable { name, known } => {
                let metrics: Vec<&str> = known
                    .iter()
                    .map(String::as_str)
                    .filter(|k| !crate::clock::TIME_VARIABLES.contains(k))
                    .collect();
                if metrics.is_empty() {
                    write!(
                        f,
                        "unknown variable {name:?}: no metrics are collected; add a metric-collectors entry with metric-name: {name}"
                    )
                } else {
                    write!(
                        f,
                        "unknown variable {name:?}; collected metrics are: {} (and the time variables {})",
                        metrics.join(", "),
                        crate::clock::TIME_VARIABLES.join(", ")
                    )
                }
            }
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
    /// Compiles a group's expressions and checks every variable is a configured metric (or
    /// one of the time variables).
    pub fn compile(
        group: &GroupConfig,
        metric_names: &[&str],
    ) -> Result<TargetExprs, ExprConfigError> {
        let metrics: Vec<&str> = metric_names
            .iter()
            .copied()
            .chain(crate::clock::TIME_VARIABLES)
            .collect();
        let compile = |e: &CountExpr| {
            Expression::compile(e.source)
                .and_then(|compiled| {
                    if let Some(c) = &compiled {
                        c.check_variables(&metrics)?;
                    }
                    Ok(compiled)
                })
                .map_err(|error| ExprConfigError {
                    key: e.key.clone(),
                    error,
                })
        };
        let pair = |count| -> Result<CompiledPair, ExprConfigError> {
            let exprs = group.count_exprs(count);
            let min = compile(&exprs.min)?;
            let max = if exprs.max == exprs.min {
                min.clone()
            } else {
                compile(&exprs.max)?
            };
            Ok((min, max))
        };
        let (min_created, max_created) = pair(Count::Created)?;
        let (min_started, max_started) = pair(Count::Started)?;
        Ok(TargetExprs {
            min_created,
            max_created,
            min_started,
            max_started,
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
