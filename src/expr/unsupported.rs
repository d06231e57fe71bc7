//! The expr-lang constructs still refused at start-up: they work on strings, collections or
//! nil, which machine counts never see, or meval has nothing to evaluate them with. Each
//! error names the construct and what to write instead.

/// What a refused construct is, and what to write instead.
pub(super) type Refusal = (&'static str, &'static str);

const NUMBERS_ONLY: &str = "expressions work on numbers only; use metric names and numbers";
const NO_COLLECTIONS: &str =
    "expressions work on numbers only; use min(a, b, ...) or max(a, b, ...) on numbers";
const NO_MEMBERS: &str = "use the metric's name as collected";
const NO_STRING_OPERATORS: &str = "expressions work on numbers only; compare numbers with ==";
const CALL_DIRECTLY: &str = "call functions directly, e.g. ceil(x)";

/// The refusal for the lexeme (operator, punctuation or keyword) that starts a refused
/// construct.
pub(super) fn refusal(lexeme: &str) -> Option<Refusal> {
    Some(match lexeme {
        "??" => (
            "the \"??\" operator",
            "metrics are never nil; remove \"?? default\"",
        ),
        "nil" => ("nil", "metrics always have a value; remove the nil check"),
        "." => ("member access \".\"", NO_MEMBERS),
        "?." => ("optional chaining \"?.\"", NO_MEMBERS),
        "\"" | "'" | "`" => ("a string literal", NUMBERS_ONLY),
        "[" | "]" => ("an array or index \"[...]\"", NO_COLLECTIONS),
        ".." => ("a range \"..\"", NO_COLLECTIONS),
        "{" | "}" => ("a map or closure \"{...}\"", NUMBERS_ONLY),
        "#" => ("a closure \"#\"", NUMBERS_ONLY),
        "|" => ("a pipe \"|\"", CALL_DIRECTLY),
        "::" => ("\"::\"", CALL_DIRECTLY),
        "in" => ("the \"in\" operator", NO_STRING_OPERATORS),
        "matches" => ("the \"matches\" operator", NO_STRING_OPERATORS),
        "contains" => ("the \"contains\" operator", NO_STRING_OPERATORS),
        "startsWith" => ("the \"startsWith\" operator", NO_STRING_OPERATORS),
        "endsWith" => ("the \"endsWith\" operator", NO_STRING_OPERATORS),
        "let" => ("a let binding", "repeat the sub-expression instead"),
        "=" => ("\"=\"", "compare with =="),
        _ => return None,
    })
}

/// expr-lang's `a ?: b`, which is `a ? a : b`: recognised by the parser, as `?` and `:` may
/// stand apart.
pub(super) const ELVIS: Refusal = ("the \"?:\" operator", "write cond ? a : b");

/// Any character outside the grammar, including non-ASCII letters and `$` in names, which
/// expr-lang reads but meval's names cannot hold.
pub(super) const OTHER_CHARACTER: Refusal = (
    "a character that is not part of an arithmetic expression",
    "use numbers, metric names (A-Z, a-z, 0-9, _), operators, parentheses and functions",
);
