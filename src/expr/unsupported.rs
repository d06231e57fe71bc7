//! The expr-lang constructs meval cannot parse, found before meval sees the expression, so
//! the start-up error names the construct and what to write instead.

const TERNARY: (&str, &str) = (
    "the ternary operator \"cond ? a : b\"",
    "write if(cond, a, b), e.g. if(gt(queue_depth, 0), 2, 0)",
);

/// The first expr-lang construct meval cannot parse, with what to write instead.
pub(super) fn unsupported_construct(s: &str) -> Option<(&'static str, &'static str)> {
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
