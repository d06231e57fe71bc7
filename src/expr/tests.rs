use super::*;
use crate::config::GroupConfig;

fn vars(pairs: &[(&str, f64)]) -> MetricValues {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn eval(src: &str, pairs: &[(&str, f64)]) -> Result<u32, ExprError> {
    Expression::compile(src)?
        .expect("not blank")
        .eval(&vars(pairs))
}

fn compile_err(src: &str) -> String {
    Expression::compile(src).unwrap_err().to_string()
}

// Go reconciler_test.go cases 3-11.
#[test]
fn go_test_cases() {
    assert_eq!(eval("1", &[]), Ok(1));
    assert_eq!(eval("2.6", &[]), Ok(3));
    assert_eq!(eval("x + y + 2", &[("x", 4.0), ("y", 7.0)]), Ok(13));
    assert_eq!(eval("min(x, y)", &[("x", 4.0), ("y", 7.0)]), Ok(4));
    assert_eq!(eval("max(x, y)", &[("x", 4.0), ("y", 7.0)]), Ok(7));
    assert_eq!(eval("-2", &[]), Ok(0));
    assert_eq!(Expression::compile(""), Ok(None));
    assert_eq!(eval("x + 1", &[("x", f64::NAN)]), Err(ExprError::NaN));
    assert_eq!(eval("1 / 0", &[]), Err(ExprError::Inf));
    assert_eq!(ExprError::NaN.to_string(), "expression returned NaN");
    assert_eq!(ExprError::Inf.to_string(), "expression returned Inf");
}

#[test]
fn rounds_half_away_from_zero() {
    assert_eq!(eval("2.5", &[]), Ok(3));
    assert_eq!(eval("2.4", &[]), Ok(2));
    assert_eq!(eval("0.5", &[]), Ok(1));
    assert_eq!(eval("-2.5", &[]), Ok(0), "negative after rounding is 0");
    assert_eq!(eval("queue_depth", &[("queue_depth", 2.5)]), Ok(3));
}

#[test]
fn negative_infinity_and_huge_values() {
    assert_eq!(eval("-1 / 0", &[]), Err(ExprError::Inf));
    assert_eq!(eval("x", &[("x", f64::NEG_INFINITY)]), Err(ExprError::Inf));
    assert_eq!(
        eval("1e30", &[]),
        Ok(u32::MAX),
        "saturates instead of wrapping negative"
    );
}

#[test]
fn blank_and_whitespace_are_not_set() {
    assert_eq!(Expression::compile("   "), Ok(None));
    assert_eq!(Expression::compile("\t\n"), Ok(None));
}

#[test]
fn expr_lang_numeric_builtins() {
    let v = [("q", 35.0)];
    assert_eq!(eval("ceil(q / 10)", &v), Ok(4));
    assert_eq!(eval("floor(q / 10)", &v), Ok(3));
    assert_eq!(eval("round(q / 10)", &v), Ok(4));
    assert_eq!(eval("abs(-q)", &v), Ok(35));
    assert_eq!(eval("int(q / 10)", &v), Ok(3));
    assert_eq!(eval("max(1, 2, q)", &v), Ok(35));
    assert_eq!(eval("min(q, 2, 9)", &v), Ok(2));
    assert_eq!(eval("2 ^ 3", &[]), Ok(8));
    assert_eq!(eval("int(q) % 10", &v), Ok(5));
}

#[test]
fn function_forms_still_work() {
    let v = [("q", 35.0), ("z", 0.0)];
    assert_eq!(eval("if(gt(q, 0), 2, 0)", &v), Ok(2));
    assert_eq!(eval("if(gt(z, 0), 2, 0)", &v), Ok(0));
    assert_eq!(
        eval(
            "ge(q, 35) + le(q, 34) + lt(z, 1) + eq(q, 35) + ne(q, 35)",
            &v
        ),
        Ok(3)
    );
    assert_eq!(eval("and(q, z) + or(q, z) * 2 + not(z) * 4", &v), Ok(6));
    assert_eq!(eval("and(q, q, z) + or(z, z, q)", &v), Ok(1));
    assert_eq!(eval("clamp(q, 1, 10)", &v), Ok(10));
    assert_eq!(eval("clamp(z, 1, 10)", &v), Ok(1));
    assert_eq!(
        eval("if(x, 5, 7)", &[("x", f64::NAN)]),
        Ok(7),
        "NaN is false"
    );
}

/// The variables of the expression tables.
const VARS: &[(&str, f64)] = &[("q", 35.0), ("z", 0.0), ("h", 0.5), ("n", -3.0)];

/// The raw value, before the result rules (rounding, negative → 0) hide it.
fn value(src: &str) -> f64 {
    let e = Expression::compile(src)
        .unwrap_or_else(|err| panic!("{src}: {err}"))
        .expect("not blank");
    e.rpn
        .eval_with_context(Scope(&vars(VARS)))
        .unwrap_or_else(|err| panic!("{src}: {err}"))
}

fn check_values(cases: &[(&str, f64)]) {
    for &(src, want) in cases {
        let got = value(src);
        assert!(
            got == want || got.is_nan() && want.is_nan(),
            "{src}: got {got}, want {want}; translated {:?}",
            go_syntax::translate(src)
        );
    }
}

// Go expressions as expr-lang v1.16.0 evaluates them, booleans read as 1 and 0.
// q = 35, z = 0, h = 0.5, n = -3.
#[test]
fn go_expressions() {
    check_values(&[
        // Arithmetic, precedence and associativity.
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("100 / 10 / 5", 2.0),
        ("7 / 2", 3.5),
        ("q / 10 * 2", 7.0),
        ("int(q) % 10", 5.0),
        ("-7 % 3", -1.0),
        ("2 * 3 % 4", 2.0),
        ("2 ** 3 ** 2", 512.0),
        ("(2 ** 3) ** 2", 64.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("2 ** 3 ^ 2", 512.0),
        ("2 * 3 ** 2", 18.0),
        ("-2 ** 2", -4.0),
        ("(-2) ** 2", 4.0),
        ("-q ** 2", -1225.0),
        ("2 ** -1", 0.5),
        ("2 ** -1 ** 2", 0.5),
        ("n ** 2", 9.0),
        ("1 - -1", 2.0),
        ("+q", 35.0),
        ("- -q", 35.0),
        ("-(2-5)**3-2/(+4-3)+-2", 23.0), // expr-lang's expr_test.go
        // Numbers as expr-lang writes them.
        ("1_000 + 1e3 + .5 + 0x10 + 0o10 + 0b10 + 1.e1 + 2E1", 2056.5),
        ("007 + 0X1f + 0B1 + 0O7 + 1_0.2_5", 56.25),
        // Comparisons, with arithmetic binding tighter.
        ("q > 10", 1.0),
        ("q > 35", 0.0),
        ("q >= 35", 1.0),
        ("q < 35", 0.0),
        ("q <= 35", 1.0),
        ("q == 35", 1.0),
        ("q != 35", 0.0),
        ("n < z", 1.0),
        ("q + 1 > q * 2 - 40", 1.0),
        // == on floats is exact.
        ("h == 0.5", 1.0),
        ("h * 2 == 1", 1.0),
        ("0.1 + 0.2 == 0.3", 0.0),
        ("2 ** 0.5 * 2 ** 0.5 == 2", 0.0),
        ("q / 7 == 5", 1.0),
        // && binds tighter than ||; both below comparisons; words and symbols alike.
        ("q > 0 && z > 0", 0.0),
        ("q > 0 || z > 0", 1.0),
        ("q > 0 and z == 0", 1.0),
        ("z > 0 or q < 0", 0.0),
        ("q > 0 || z > 0 && h > 1", 1.0),
        ("(q > 0 || z > 0) && h > 1", 0.0),
        ("z > 0 && h > 1 || q > 0", 1.0),
        ("q > 0 and z > 0 or h > 0", 1.0),
        ("true && false || true", 1.0),
        ("true || true && false", 1.0),
        // ! and not: unary, below arithmetic, above comparisons.
        ("!(q > 0)", 0.0),
        ("!true", 0.0),
        ("!false", 1.0),
        ("!!true", 1.0),
        ("not false", 1.0),
        ("not true or true", 1.0),
        ("not (true or true)", 0.0),
        ("!true == false", 1.0),
        ("not (q > 0) || z == 0", 1.0),
        ("q > 0 && !(z > 0)", 1.0),
        ("true && !false", 1.0),
        // Ternaries: lowest, right-associative, nestable anywhere.
        ("q > 10 ? 5 : 1", 5.0),
        ("z > 10 ? 5 : 1", 1.0),
        ("q > 100 ? 3 : q > 10 ? 2 : 1", 2.0),
        ("z > 100 ? 3 : z > 10 ? 2 : 1", 1.0),
        ("q > 100 ? 3 : (q > 10 ? 2 : 1)", 2.0),
        ("q > 10 ? z > 0 ? 1 : 2 : 3", 2.0),
        ("(q > 0 ? 1 : 2) + 10", 11.0),
        ("1 + q > 0 ? 7 : 8", 7.0),
        ("q > 0 || z > 0 ? 7 : 8", 7.0),
        ("!(q > 0) ? 7 : 8", 8.0),
        ("q > 0 ? -1 : -2", -1.0),
        ("(true ? 0+1 : 2+3) + (false ? -1 : -2)", -1.0), // expr-lang's expr_test.go
        ("z > 0 ? 10 / z : 0", 0.0),
        ("max(q > 10 ? 3 : 1, 2)", 3.0),
        ("q > 0 ? max(2, ceil(q / 10)) : 0", 4.0),
        // Operators and the function forms mixed.
        ("if(q > 10, 5, 1)", 5.0),
        ("if(gt(q, 10), 5, 1) + (q > 10 ? 1 : 0)", 6.0),
        ("and(q > 0, not(z)) ? 2 : 3", 2.0),
        ("clamp(q / 10, 1, 3) ** 2", 9.0),
        ("min(q, 100) >= 35", 1.0),
        ("ceil(q / 10) == 4 && floor(q / 10) == 3", 1.0),
        ("abs(n) ** 2 - round(h)", 8.0),
        ("max(1, min(q, 10 * 2), -n)", 20.0),
        // Comments and any whitespace, as expr-lang's lexer skips them.
        ("q /* depth */ + 1 // one more", 36.0),
        ("q >\n 10\t? 1 : 0", 1.0),
        ("q\u{a0}+\u{a0}1", 36.0),
    ]);
}

// What Go's type checker refuses (a condition or `!` on a number, `%` on floats, a boolean in
// arithmetic or as the result) works here with booleans as 1 and 0; anything Go accepts
// evaluates as above. Precedence is still expr-lang's.
#[test]
fn booleans_are_numbers() {
    check_values(&[
        ("q ? 1 : 0", 1.0),
        ("z ? 1 : 0", 0.0),
        ("q > 10", 1.0),
        ("(q > 0) + (z > 0)", 1.0),
        ("q % 10", 5.0),
        ("7.5 % 2", 1.5),
        ("not z > 0", 1.0),
        // `!` takes `*`, as in expr-lang: !(z * 2), not (!z) * 2.
        ("!z * 2", 1.0),
        // The function form is a call, as it always was.
        ("not(z) * 2", 2.0),
        // Comparisons are left-associative, not chained: (3 > 2) > 1 is 1 > 1.
        ("1 < 2 < 3", 1.0),
        ("3 > 2 > 1", 0.0),
        ("q && 1", 1.0),
    ]);
}

#[test]
fn infinities_and_nan() {
    let v = [("q", 35.0), ("z", 0.0), ("n", -3.0), ("x", f64::NAN)];
    let cases = [
        ("1 / 0", Err(ExprError::Inf)),
        ("q / z", Err(ExprError::Inf)),
        ("-q / z", Err(ExprError::Inf)),
        ("q > 0 ? q / z : 3", Err(ExprError::Inf)),
        ("z > 0 ? q / z : 3", Ok(3)),
        ("10 ** 400", Err(ExprError::Inf)),
        ("z / z", Err(ExprError::NaN)),
        ("q % z", Err(ExprError::NaN)),
        ("n ** 0.5", Err(ExprError::NaN)),
        ("x + 1", Err(ExprError::NaN)),
        ("x > 0 ? 1 : x", Err(ExprError::NaN)),
        // NaN compares unequal to everything, itself included, and is false.
        ("x == x", Ok(0)),
        ("x != x", Ok(1)),
        ("x > 0 || x <= 0", Ok(0)),
        ("x ? 5 : 7", Ok(7)),
        ("!x", Ok(1)),
    ];
    for (src, want) in cases {
        assert_eq!(eval(src, &v), want, "{src}");
    }
}

#[test]
fn translations() {
    let cases = [
        ("q > 10 ? 5 : 1", "if(gt(q, 10.0), 5.0, 1.0)"),
        ("a && b || !c", "or(and(a, b), not(c))"),
        ("a or b and not c", "or(a, and(b, not(c)))"),
        ("-2 ** 2", "(-(2.0 ^ 2.0))"),
        ("a == b != c", "ne(eq(a, b), c)"),
        ("1 - 2 - 3", "((1.0 - 2.0) - 3.0)"),
        ("true + false", "(1.0 + 0.0)"),
        (
            "ceil(q / 10) <= max(2, q)",
            "le(ceil((q / 10.0)), max(2.0, q))",
        ),
        ("1e30", "1e30"),
    ];
    for (src, want) in cases {
        assert_eq!(go_syntax::translate(src).as_deref(), Ok(want), "{src}");
    }
}

#[test]
fn refused_go_constructs_say_what_to_write() {
    let cases = [
        (
            "q ?? 0",
            "uses the \"??\" operator at character 3, which is not supported here: metrics are never nil; remove \"?? default\"",
        ),
        (
            "q ?: 1",
            "uses the \"?:\" operator at character 3, which is not supported here: write cond ? a : b",
        ),
        (
            "q == nil ? 0 : q",
            "uses nil at character 6, which is not supported here: metrics always have a value; remove the nil check",
        ),
        (
            "len(\"x\")",
            "uses a string literal at character 5, which is not supported here: expressions work on numbers only; use metric names and numbers",
        ),
        (
            "q > 'a'",
            "uses a string literal at character 5, which is not supported here: expressions work on numbers only; use metric names and numbers",
        ),
        (
            "max([1, 2])",
            "uses an array or index \"[...]\" at character 5, which is not supported here: expressions work on numbers only; use min(a, b, ...) or max(a, b, ...) on numbers",
        ),
        (
            "sum(1..3)",
            "uses a range \"..\" at character 6, which is not supported here: expressions work on numbers only; use min(a, b, ...) or max(a, b, ...) on numbers",
        ),
        (
            "x.y",
            "uses member access \".\" at character 2, which is not supported here: use the metric's name as collected",
        ),
        (
            "x?.y",
            "uses optional chaining \"?.\" at character 2, which is not supported here: use the metric's name as collected",
        ),
        (
            "q | ceil()",
            "uses a pipe \"|\" at character 3, which is not supported here: call functions directly, e.g. ceil(x)",
        ),
        (
            "::ceil(q)",
            "uses \"::\" at character 1, which is not supported here: call functions directly, e.g. ceil(x)",
        ),
        (
            "all(xs, {# > 1})",
            "uses a map or closure \"{...}\" at character 9, which is not supported here: expressions work on numbers only; use metric names and numbers",
        ),
        (
            "# > 1",
            "uses a closure \"#\" at character 1, which is not supported here: expressions work on numbers only; use metric names and numbers",
        ),
        (
            "q in 1",
            "uses the \"in\" operator at character 3, which is not supported here: expressions work on numbers only; compare numbers with ==",
        ),
        (
            "q not in 1",
            "uses the \"in\" operator at character 7, which is not supported here: expressions work on numbers only; compare numbers with ==",
        ),
        (
            "a matches b",
            "uses the \"matches\" operator at character 3, which is not supported here: expressions work on numbers only; compare numbers with ==",
        ),
        (
            "a contains b",
            "uses the \"contains\" operator at character 3, which is not supported here: expressions work on numbers only; compare numbers with ==",
        ),
        (
            "a startsWith b",
            "uses the \"startsWith\" operator at character 3, which is not supported here: expressions work on numbers only; compare numbers with ==",
        ),
        (
            "a endsWith b",
            "uses the \"endsWith\" operator at character 3, which is not supported here: expressions work on numbers only; compare numbers with ==",
        ),
        (
            "let x = q; x",
            "uses a let binding at character 1, which is not supported here: repeat the sub-expression instead",
        ),
        (
            "q = 1",
            "uses \"=\" at character 3, which is not supported here: compare with ==",
        ),
        (
            "q ≥ 1",
            "uses a character that is not part of an arithmetic expression at character 3, which is not supported here: use numbers, metric names (A-Z, a-z, 0-9, _), operators, parentheses and functions",
        ),
        (
            "$env + 1",
            "uses a character that is not part of an arithmetic expression at character 1, which is not supported here: use numbers, metric names (A-Z, a-z, 0-9, _), operators, parentheses and functions",
        ),
        (
            "q & 1",
            "uses a character that is not part of an arithmetic expression at character 3, which is not supported here: use numbers, metric names (A-Z, a-z, 0-9, _), operators, parentheses and functions",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(compile_err(src), format!("expression {src:?} {want}"));
    }
}

#[test]
fn syntax_errors_point_into_the_text_as_written() {
    let cases = [
        ("1 +", "an operand is missing at the end"),
        ("!", "an operand is missing at the end"),
        ("q and", "an operand is missing at the end"),
        ("ceil(q", "missing \")\" for the \"(\" at character 5"),
        ("(q + 1", "missing \")\" for the \"(\" at character 1"),
        ("q > 0 ? 1", "missing \":\" for the \"?\" at character 7"),
        ("q)", "unexpected \")\" at character 2"),
        ("()", "unexpected \")\" at character 2"),
        ("2 q", "unexpected \"q\" at character 3"),
        ("q ? 1 2", "unexpected \"2\" at character 7"),
        ("and", "unexpected \"and\" at character 1"),
        ("q not 1", "unexpected \"not\" at character 3"),
        ("max(q,)", "unexpected \")\" at character 7"),
        ("max(q 1)", "unexpected \"1\" at character 7"),
        ("true(1)", "unexpected \"(\" at character 5"),
        ("1, 2", "unexpected \",\" at character 2"),
        // Characters, not bytes: "é" and a no-break space are two bytes each.
        ("/* é */ )", "unexpected \")\" at character 9"),
        ("1\u{a0}+ )", "unexpected \")\" at character 5"),
        ("/* q", "unclosed comment at character 1"),
        ("2q", "bad number \"2q\" at character 1"),
        ("1.5.5", "unexpected \".5\" at character 4"),
        ("1e", "invalid or out-of-range number \"1e\" at character 1"),
        (
            "1 + 0x",
            "invalid or out-of-range number \"0x\" at character 5",
        ),
        (
            "1e400",
            "invalid or out-of-range number \"1e400\" at character 1",
        ),
        (
            "9223372036854775808",
            "invalid or out-of-range number \"9223372036854775808\" at character 1",
        ),
    ];
    for (src, detail) in cases {
        assert_eq!(
            compile_err(src),
            format!("invalid expression {src:?}: {detail}"),
        );
    }
    assert_eq!(eval("9223372036854775807 > 0", &[]), Ok(1));
}

#[test]
fn nesting_is_bounded() {
    let deep = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let limit = go_syntax::MAX_NESTING;
    for (open, close) in [
        ("(", ")"),
        ("max(", ")"),
        ("-", ""),
        ("!", ""),
        ("2 ** ", ""),
    ] {
        assert!(
            Expression::compile(&deep(open, "1", close, limit)).is_ok(),
            "{open}"
        );
        let err = compile_err(&deep(open, "1", close, limit + 1));
        assert!(err.contains("nested more than 64 levels deep"), "{err}");
    }
    let ternaries = format!("{}1", "q ? 1 : ".repeat(limit + 1));
    assert!(compile_err(&ternaries).contains("nested more than 64 levels deep"));
    // Far past the limit, it is an error, not a stack overflow.
    assert!(compile_err(&"(".repeat(100_000)).contains("nested more than 64"));
    // Long flat chains are not nesting.
    let flat = vec!["q"; 10_000];
    for op in [" + ", " == ", " && ", " ** 1 * "] {
        assert!(Expression::compile(&flat.join(op)).is_ok(), "{op}");
    }
}

#[test]
fn unknown_functions_and_wrong_arity() {
    let err = compile_err("sum(q)");
    assert!(
        err.contains("unknown function \"sum\"") && err.contains("available: abs, ceil"),
        "{err}"
    );
    let err = compile_err("if(q, 1)");
    assert!(
        err.contains("calls if with 2 argument(s); write if(cond, then, else)"),
        "{err}"
    );
    assert!(compile_err("ceil(1, 2)").contains("write ceil(x)"));
    assert!(compile_err("max()").contains("calls max with 0 argument(s)"));
    assert!(compile_err("q > 0 ? len(q) : 1").contains("unknown function \"len\""));
}

#[test]
fn variables_must_be_collected_metrics() {
    let e = Expression::compile("ceil(queue_depth / 10) + workers")
        .unwrap()
        .unwrap();
    assert_eq!(e.variables(), ["queue_depth", "workers"]);
    let err = e.check_variables(&["queue_depth", "other"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown variable \"workers\"; collected metrics are: queue_depth, other (and the time variables hour, minute, weekday, day, month)"
    );
    let err = e.check_variables(&[]).unwrap_err().to_string();
    assert!(err.contains("no metrics are collected"), "{err}");
    assert!(e.check_variables(&["workers", "queue_depth"]).is_ok());
    // Go syntax: the names as written; true, false and the word operators are not variables.
    let e = Expression::compile("not a and b || c > 0 ? max(d, true) : e ** false")
        .unwrap()
        .unwrap();
    assert_eq!(e.variables(), ["a", "b", "c", "d", "e"]);
    let err = e.check_variables(&["a", "b", "c", "d"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown variable \"e\"; collected metrics are: a, b, c, d (and the time variables hour, minute, weekday, day, month)"
    );
    // pi and e are not expr-lang names either.
    assert!(
        Expression::compile("pi")
            .unwrap()
            .unwrap()
            .check_variables(&[])
            .is_err()
    );
}

fn group(created: &str, started: &str) -> GroupConfig {
    GroupConfig {
        created_machine_count: created.into(),
        started_machine_count: started.into(),
        ..GroupConfig::default()
    }
}

#[test]
fn targets_clamp_created_to_one_and_leave_started() {
    let t = TargetExprs::compile(&group("q", "q"), &["q"]).unwrap();
    let counts = t.evaluate(&vars(&[("q", 0.0)])).unwrap();
    assert_eq!(
        counts.created,
        Bounds {
            min: Some(1),
            max: Some(1)
        }
    );
    assert_eq!(
        counts.started,
        Bounds {
            min: Some(0),
            max: Some(0)
        }
    );
    let counts = t.evaluate(&vars(&[("q", -4.0)])).unwrap();
    assert_eq!(counts.created.min, Some(1));
    assert_eq!(counts.started.max, Some(0));
}

#[test]
fn unset_targets_are_none() {
    let t = TargetExprs::compile(&group("", "ceil(q / 10)"), &["q"]).unwrap();
    let counts = t.evaluate(&vars(&[("q", 35.0)])).unwrap();
    assert_eq!(counts.created, Bounds::default());
    assert_eq!(
        counts.started,
        Bounds {
            min: Some(4),
            max: Some(4)
        }
    );
}

#[test]
fn start_up_errors_name_the_key() {
    let err = TargetExprs::compile(&group("", "q ?? 1"), &["q"]).unwrap_err();
    assert_eq!(err.key, "started-machine-count");
    assert!(
        err.to_string()
            .starts_with("started-machine-count: expression \"q ?? 1\" uses")
    );
    let t = TargetExprs::compile(&group("", "q > 0 ? 5 : 0"), &["q"]).unwrap();
    assert_eq!(
        t.evaluate(&vars(&[("q", 3.0)])).unwrap().started.min,
        Some(5)
    );
    let c = GroupConfig {
        min_created_machine_count: "1".into(),
        max_created_machine_count: "nope + 1".into(),
        ..group("", "")
    };
    let err = TargetExprs::compile(&c, &["q"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max-created-machine-count: unknown variable \"nope\"; collected metrics are: q (and the time variables hour, minute, weekday, day, month)"
    );
    let time = TargetExprs::compile(&group("", "if(lt(hour, 8), 1, 2)"), &["q"]);
    assert!(time.is_ok(), "time variables need no collector");
}

#[test]
fn evaluation_errors_name_the_target() {
    let t = TargetExprs::compile(&group("", "q"), &["q"]).unwrap();
    let err = t.evaluate(&vars(&[("q", f64::NAN)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot calculate min started machine count: expression returned NaN"
    );
}

/// Fragments of expr-lang, most of them accepted, for random token soups.
const SOUP: &[&str] = &[
    "q", "z", "q", "1", "2.5", "1e3", "0x1f", "(", ")", "(", ")", ",", "?", ":", "?", ":", "+",
    "-", "-", "*", "**", "/", "%", "^", "==", "!=", "!", "<", "<=", ">=", "&&", "||", "and", "or",
    "not", "not", "true", "false", "max(", "if(", "not(", "and(", "ceil(", "/*", "*/",
    // Refused, malformed, or hard on positions.
    "??", "?.", ".", "..", "=", "&", "|", "nil", "in", "let", "sum(", "[", "{", "#", "'", "1e",
    "9e999", "é", "$", "\u{a0}", "\n",
];

proptest::proptest! {
    // Any input: an expression or an error, never a panic, and whatever the translator
    // accepts meval reads and evaluates.
    #[test]
    fn token_soups_never_panic(
        parts in proptest::collection::vec(proptest::sample::select(SOUP), 0..40),
        glue in proptest::sample::select(&["", " "][..]),
    ) {
        let src = parts.join(glue);
        match Expression::compile(&src) {
            Ok(Some(e)) => {
                let metrics = vars(&e.variables().iter().map(|v| (*v, 1.5)).collect::<Vec<_>>());
                let _ = e.eval(&metrics);
            }
            Ok(None) => {}
            Err(err) => proptest::prop_assert!(!err.to_string().contains("meval cannot read"), "{src}: {err}"),
        }
    }
}
