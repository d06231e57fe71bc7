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
fn replacements_for_expr_lang_operators() {
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
    assert_eq!(eval("clamp(q, 1, 10)", &v), Ok(10));
    assert_eq!(eval("clamp(z, 1, 10)", &v), Ok(1));
    assert_eq!(
        eval("if(x, 5, 7)", &[("x", f64::NAN)]),
        Ok(7),
        "NaN is false"
    );
}

#[test]
fn unsupported_constructs_say_what_to_write() {
    let cases = [
        (
            "queue_depth > 0 ? 2 : 0",
            "ternary operator",
            "if(gt(queue_depth, 0), 2, 0)",
        ),
        ("queue_depth > 0", "\">\" operator", "gt(a, b)"),
        ("q ? 2 : 0", "ternary operator", "if(cond, a, b)"),
        ("q >= 1", "\">=\"", "ge(a, b)"),
        ("q <= 1", "\"<=\"", "le(a, b)"),
        ("q < 1", "\"<\"", "lt(a, b)"),
        ("q == 1", "\"==\"", "eq(a, b)"),
        ("q != 1", "\"!=\"", "ne(a, b)"),
        ("a && b", "\"&&\"", "and(a, b)"),
        ("a || b", "\"||\"", "or(a, b)"),
        ("a and b", "\"and\" operator", "and(a, b)"),
        ("a or b", "\"or\" operator", "or(a, b)"),
        ("not a", "\"not\" operator", "not(x)"),
        ("!a", "\"!\" operator", "not(x)"),
        ("q ** 2", "\"**\"", "a ^ b"),
        ("q ?? 0", "\"??\"", "remove"),
        ("true", "boolean literal", "1 for true"),
        ("len(\"x\")", "string literal", "numbers only"),
        ("[1, 2]", "an array", "min(a, b, ...)"),
        ("x.y", "member access", "metric's name"),
        ("q | ceil()", "a pipe", "ceil(x)"),
        ("q ≥ 1", "not part of an arithmetic expression", "numbers"),
    ];
    for (src, construct, instead) in cases {
        let err = compile_err(src);
        assert!(err.contains(construct), "{src}: {err}");
        assert!(err.contains(instead), "{src}: {err}");
        assert!(
            err.contains(&format!("{src:?}")),
            "{src}: error should quote the expression: {err}"
        );
    }
}

#[test]
fn syntax_errors_are_readable() {
    assert!(compile_err("1 +").contains("an operand is missing"));
    assert!(compile_err("ceil(q").contains("missing 1 closing parenthesis"));
    assert!(compile_err("q)").contains("invalid expression \"q)\""));
    assert!(compile_err("2 q").contains("unexpected input at character 3"));
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
    let err = TargetExprs::compile(&group("", "q > 0 ? 1 : 0"), &["q"]).unwrap_err();
    assert_eq!(err.key, "started-machine-count");
    assert!(
        err.to_string()
            .starts_with("started-machine-count: expression \"q > 0 ? 1 : 0\" uses")
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
