//! The functions expressions may call: expr-lang's numeric builtins, then the replacements
//! for the operators meval lacks. In these, 0 (and NaN) is false and anything else true;
//! comparisons give 1 or 0.

/// A function available to expressions.
pub(super) struct Function {
    pub name: &'static str,
    pub min_args: usize,
    max_args: usize,
    pub usage: &'static str,
    pub eval: fn(&[f64]) -> f64,
}

impl Function {
    pub fn accepts(&self, n: usize) -> bool {
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

pub(super) const FUNCTIONS: &[Function] = &[
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

pub(super) fn function_names() -> String {
    FUNCTIONS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}
