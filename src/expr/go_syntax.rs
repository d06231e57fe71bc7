//! The Go program's expression syntax (expr-lang v1.16.0), translated to the form meval
//! parses: operators meval lacks become calls of the functions in `functions.rs`, and every
//! operation is parenthesised so meval's own precedence never decides anything.
//!
//! The lexer and the precedence climbing mirror expr-lang's `parser/lexer/state.go`,
//! `parser/parser.go` and `parser/operator/operator.go`; syntax errors are found here, so
//! they point into the text as written.

use super::ExprError;
use super::functions::FUNCTIONS;
use super::unsupported::{ELVIS, OTHER_CHARACTER, Refusal, refusal};

/// Deepest nesting of parentheses, calls, unary operators, `**` and ternaries: bounds the
/// recursion on untrusted input. Machine-count formulas nest a handful of levels.
pub(super) const MAX_NESTING: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Times,
    Div,
    Rem,
    Pow,
}

impl Op {
    /// expr-lang's binary precedence; only `**` (and `^`) is right-associative.
    fn precedence(self) -> u8 {
        match self {
            Op::Or => 10,
            Op::And => 15,
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => 20,
            Op::Plus | Op::Minus => 30,
            Op::Times | Op::Div | Op::Rem => 60,
            Op::Pow => 100,
        }
    }

    /// The meval text before the left operand and between the operands; `)` closes both.
    fn meval(self) -> (&'static str, &'static str) {
        match self {
            Op::Or => ("or(", ", "),
            Op::And => ("and(", ", "),
            Op::Eq => ("eq(", ", "),
            Op::Ne => ("ne(", ", "),
            Op::Lt => ("lt(", ", "),
            Op::Le => ("le(", ", "),
            Op::Gt => ("gt(", ", "),
            Op::Ge => ("ge(", ", "),
            Op::Plus => ("(", " + "),
            Op::Minus => ("(", " - "),
            Op::Times => ("(", " * "),
            Op::Div => ("(", " / "),
            Op::Rem => ("(", " % "),
            Op::Pow => ("(", " ^ "),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind<'a> {
    Number(f64),
    /// A metric or function name, or the word operators `and`, `or`, `not`, whose meaning
    /// depends on where they stand.
    Name(&'a str),
    /// A binary operator, or `-` and `+` in unary position.
    Op(Op),
    /// `!`, which is only unary.
    Not,
    Open,
    Close,
    Comma,
    Question,
    Colon,
    End,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind<'a>,
    text: &'a str,
    /// Byte offset in the source.
    at: usize,
}

/// Operators and punctuation; `lex` tries two-character lexemes before one-character ones.
const PUNCTUATION: &[(&str, Kind<'static>)] = &[
    ("**", Kind::Op(Op::Pow)),
    ("==", Kind::Op(Op::Eq)),
    ("!=", Kind::Op(Op::Ne)),
    ("<=", Kind::Op(Op::Le)),
    (">=", Kind::Op(Op::Ge)),
    ("&&", Kind::Op(Op::And)),
    ("||", Kind::Op(Op::Or)),
    ("+", Kind::Op(Op::Plus)),
    ("-", Kind::Op(Op::Minus)),
    ("*", Kind::Op(Op::Times)),
    ("/", Kind::Op(Op::Div)),
    ("%", Kind::Op(Op::Rem)),
    ("^", Kind::Op(Op::Pow)),
    ("<", Kind::Op(Op::Lt)),
    (">", Kind::Op(Op::Gt)),
    ("!", Kind::Not),
    ("(", Kind::Open),
    (")", Kind::Close),
    (",", Kind::Comma),
    ("?", Kind::Question),
    (":", Kind::Colon),
];

/// Translates `src` (trimmed, not blank) into meval's syntax.
pub(super) fn translate(src: &str) -> Result<String, ExprError> {
    let tokens = lex(src)?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    let out = parser.expression(0)?;
    match parser.peek() {
        token if token.kind != Kind::End => Err(parser.unexpected(token)),
        _ => Ok(out),
    }
}

/// 1-based character position of byte offset `at`, as a user counts.
fn position(src: &str, at: usize) -> usize {
    src.get(..at).map_or(0, |s| s.chars().count()) + 1
}

fn refused(src: &str, at: usize, (construct, instead): Refusal) -> ExprError {
    ExprError::Unsupported {
        expr: src.to_string(),
        construct,
        instead,
        at: position(src, at),
    }
}

fn syntax(src: &str, detail: String) -> ExprError {
    ExprError::Syntax {
        expr: src.to_string(),
        detail,
    }
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Splits `src` into tokens, ending with `End`; refused constructs are reported here, before
/// any syntax error, wherever they stand.
fn lex(src: &str) -> Result<Vec<Token<'_>>, ExprError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = src.get(i..).and_then(|rest| rest.chars().next()) {
        let rest = &src[i..];
        let start = i;
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        let kind = if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        } else if rest.starts_with("//") {
            i = rest.find('\n').map_or(src.len(), |n| i + n);
            continue;
        } else if let Some(comment) = rest.strip_prefix("/*") {
            match comment.find("*/") {
                Some(n) => i += n + 4,
                None => {
                    let at = position(src, i);
                    return Err(syntax(src, format!("unclosed comment at character {at}")));
                }
            }
            continue;
        } else if c.is_ascii_digit() || c == '.' && next.is_ascii_digit() {
            i = scan_number(bytes, i);
            let text = &src[start..i];
            let glued = |c: &char| c.is_alphanumeric() || *c == '$';
            if let Some(after) = src[i..].chars().next().filter(glued) {
                let at = position(src, start);
                let bad = &src[start..i + after.len_utf8()];
                return Err(syntax(src, format!("bad number {bad:?} at character {at}")));
            }
            Kind::Number(number(src, text, start)?)
        } else if c.is_ascii_alphabetic() || c == '_' {
            while bytes.get(i).is_some_and(|&b| is_word_char(b)) {
                i += 1;
            }
            match &src[start..i] {
                "true" => Kind::Number(1.0),
                "false" => Kind::Number(0.0),
                word => match refusal(word) {
                    Some(r) => return Err(refused(src, start, r)),
                    None => Kind::Name(word),
                },
            }
        } else {
            let mut found = None;
            for len in [2, 1] {
                let Some(lexeme) = rest.get(..len) else {
                    continue;
                };
                if let Some((_, kind)) = PUNCTUATION.iter().find(|(p, _)| *p == lexeme) {
                    found = Some((*kind, len));
                    break;
                }
                if let Some(r) = refusal(lexeme) {
                    return Err(refused(src, start, r));
                }
            }
            let Some((kind, len)) = found else {
                return Err(refused(src, start, OTHER_CHARACTER));
            };
            i += len;
            kind
        };
        tokens.push(Token {
            kind,
            text: &src[start..i],
            at: start,
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        text: "",
        at: src.len(),
    });
    Ok(tokens)
}

/// The end of the number starting at `i`, as expr-lang's `scanNumber` reads it: `_`
/// separators, `0x`/`0o`/`0b` prefixes, a fraction unless `..` follows, an exponent.
fn scan_number(b: &[u8], mut i: usize) -> usize {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut digits: fn(u8) -> bool = |c| c.is_ascii_digit() || c == b'_';
    if at(i) == b'0' {
        let prefix: Option<fn(u8) -> bool> = match at(i + 1) {
            b'x' | b'X' => Some(|c| c.is_ascii_hexdigit() || c == b'_'),
            b'o' | b'O' => Some(|c| (b'0'..=b'7').contains(&c) || c == b'_'),
            b'b' | b'B' => Some(|c| c == b'0' || c == b'1' || c == b'_'),
            _ => None,
        };
        if let Some(p) = prefix {
            digits = p;
            i += 2;
        }
    }
    while digits(at(i)) {
        i += 1;
    }
    if at(i) == b'.' && at(i + 1) != b'.' {
        i += 1;
        while digits(at(i)) {
            i += 1;
        }
    }
    if matches!(at(i), b'e' | b'E') {
        i += 1;
        if matches!(at(i), b'+' | b'-') {
            i += 1;
        }
        // As expr-lang does, with the prefix's digits: `0b1e2` is a bad number.
        while digits(at(i)) {
            i += 1;
        }
    }
    i
}

/// The value of a number literal, read as expr-lang reads it: integers (decimal, hex, octal,
/// binary) must fit in 64 bits, and floats must be finite.
fn number(src: &str, text: &str, at: usize) -> Result<f64, ExprError> {
    let lower = text.replace('_', "").to_ascii_lowercase();
    // `Some(None)` when the prefix matches but the digits do not make an i64.
    let int = |prefix: &str, radix| {
        lower
            .strip_prefix(prefix)
            .map(|d| i64::from_str_radix(d, radix).map(|n| n as f64).ok())
    };
    // expr-lang's order: hex, then float, then binary, octal and decimal.
    let value = int("0x", 16)
        .or_else(|| {
            lower
                .contains(['.', 'e'])
                .then(|| lower.parse::<f64>().ok().filter(|v| v.is_finite()))
        })
        .or_else(|| int("0b", 2))
        .or_else(|| int("0o", 8))
        .unwrap_or_else(|| lower.parse::<i64>().map(|n| n as f64).ok());
    value.ok_or_else(|| {
        let at = position(src, at);
        syntax(
            src,
            format!("invalid or out-of-range number {text:?} at character {at}"),
        )
    })
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token<'a>>,
    /// Index of the current token; the last token is `End` and is never passed.
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        self.tokens[self.pos]
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn unexpected(&self, token: Token) -> ExprError {
        let detail = match token.kind {
            Kind::End => "an operand is missing at the end".to_string(),
            _ => format!(
                "unexpected {:?} at character {}",
                token.text,
                position(self.src, token.at)
            ),
        };
        syntax(self.src, detail)
    }

    /// Consumes `kind`, the closing partner of `opener`.
    fn expect(&mut self, kind: Kind, opener: Token, what: &str) -> Result<(), ExprError> {
        let token = self.next();
        match token.kind {
            k if k == kind => Ok(()),
            Kind::End => Err(syntax(
                self.src,
                format!(
                    "missing {what} for the {:?} at character {}",
                    opener.text,
                    position(self.src, opener.at)
                ),
            )),
            _ => Err(self.unexpected(token)),
        }
    }

    /// Runs `parse` one nesting level deeper; `at` is where the level opens.
    fn nested(
        &mut self,
        at: usize,
        parse: impl FnOnce(&mut Self) -> Result<String, ExprError>,
    ) -> Result<String, ExprError> {
        if self.depth == MAX_NESTING {
            let at = position(self.src, at);
            return Err(syntax(
                self.src,
                format!("nested more than {MAX_NESTING} levels deep at character {at}"),
            ));
        }
        self.depth += 1;
        let out = parse(self);
        self.depth -= 1;
        out
    }

    /// The current token as a binary operator; `and` and `or` are words.
    fn binary_op(&self) -> Option<Op> {
        match self.peek().kind {
            Kind::Op(op) => Some(op),
            Kind::Name("and") => Some(Op::And),
            Kind::Name("or") => Some(Op::Or),
            _ => None,
        }
    }

    /// expr-lang's `parseExpression`: operators binding at least as tightly as `min`, then,
    /// at the top of an expression, a ternary.
    fn expression(&mut self, min: u8) -> Result<String, ExprError> {
        let first = self.operand()?;
        // As in expr-lang, each operator taken here applies to everything on its left, so the
        // prefixes (`gt(`, `(`) are known only at the end; collecting them keeps a long chain
        // linear instead of re-copying the left side at every operator.
        let mut chain: Vec<(Op, String)> = Vec::new();
        while let Some(op) = self.binary_op().filter(|op| op.precedence() >= min) {
            let token = self.next();
            let right = if op == Op::Pow {
                self.nested(token.at, |p| p.expression(op.precedence()))?
            } else {
                self.expression(op.precedence() + 1)?
            };
            chain.push((op, right));
        }
        let mut out: String = chain.iter().rev().map(|(op, _)| op.meval().0).collect();
        out.push_str(&first);
        for (op, right) in &chain {
            out.push_str(op.meval().1);
            out.push_str(right);
            out.push(')');
        }
        if min == 0 && self.peek().kind == Kind::Question {
            return self.conditional(out);
        }
        Ok(out)
    }

    /// `cond ? a : b`, right-associative: `b` is a whole expression.
    fn conditional(&mut self, cond: String) -> Result<String, ExprError> {
        let question = self.next();
        if self.peek().kind == Kind::Colon {
            return Err(refused(self.src, question.at, ELVIS));
        }
        let then = self.nested(question.at, |p| p.expression(0))?;
        self.expect(Kind::Colon, question, "\":\"")?;
        let otherwise = self.nested(question.at, |p| p.expression(0))?;
        Ok(format!("if({cond}, {then}, {otherwise})"))
    }

    /// A number, name, call, parenthesised expression, or unary operator with its operand.
    fn operand(&mut self) -> Result<String, ExprError> {
        let token = self.next();
        let followed_by_paren = self.peek().kind == Kind::Open;
        // expr-lang's unary precedence: `-x ** 2` is -(x ** 2), `!a * b` is !(a * b).
        // `not(x)` is the function call the README has always offered.
        let unary = match token.kind {
            Kind::Op(Op::Minus) => Some((90, "(-")),
            Kind::Op(Op::Plus) => Some((90, "(+")),
            Kind::Not => Some((50, "not(")),
            Kind::Name("not") if !followed_by_paren => Some((50, "not(")),
            _ => None,
        };
        if let Some((precedence, open)) = unary {
            let operand = self.nested(token.at, |p| p.expression(precedence))?;
            return Ok(format!("{open}{operand})"));
        }
        match token.kind {
            Kind::Number(v) => Ok(format!("{v:?}")),
            Kind::Open => {
                let inner = self.nested(token.at, |p| p.expression(0))?;
                self.expect(Kind::Close, token, "\")\"")?;
                Ok(format!("({inner})"))
            }
            Kind::Name(name) if followed_by_paren => self.call(name),
            Kind::Name(name) if name != "and" && name != "or" => Ok(name.to_string()),
            _ => Err(self.unexpected(token)),
        }
    }

    /// A call of a function in the table, with its arguments; the current token is `(`.
    fn call(&mut self, name: &str) -> Result<String, ExprError> {
        let Some(function) = FUNCTIONS.iter().find(|f| f.name == name) else {
            return Err(ExprError::UnknownFunction {
                expr: self.src.to_string(),
                name: name.to_string(),
            });
        };
        let open = self.next();
        let mut out = format!("{name}(");
        let mut args = 0;
        if self.peek().kind == Kind::Close {
            self.next();
        } else {
            loop {
                if args > 0 {
                    out.push_str(", ");
                }
                out.push_str(&self.nested(open.at, |p| p.expression(0))?);
                args += 1;
                if self.peek().kind != Kind::Comma {
                    self.expect(Kind::Close, open, "\")\"")?;
                    break;
                }
                self.next();
            }
        }
        if !function.accepts(args) {
            return Err(ExprError::WrongArgumentCount {
                expr: self.src.to_string(),
                name: name.to_string(),
                got: args,
            });
        }
        out.push(')');
        Ok(out)
    }
}
