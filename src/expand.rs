//! `$NAME` / `${NAME}` expansion with the Go program's rules (Go's `os.Expand`), used for the
//! config file text and for metric queries.
//!
//! Two deliberate differences, both applied through the lookup functions below:
//! `$$` yields a literal `$` (Go has no escape, so PromQL's `"$1"` could not be written in a
//! config file), and the config file keeps `$APP_NAME` for the per-app expansion at query time
//! (Go replaced it with the autoscaler's own, normally empty, `APP_NAME` at load time).

/// Expands every `$` reference in `s`. `lookup` returns the replacement for a name, or `None` to
/// keep the reference exactly as written.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0; // start of the text not yet copied to `out`
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&s[copied..i]);
            let (name, width) = shell_name(&s[i + 1..]);
            match name {
                // Bad syntax (`${}` or an unclosed `${`): Go drops those characters.
                None if width > 0 => {}
                // `$` followed by something that is not a name stays as it is.
                None => out.push('$'),
                Some(name) => match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&s[i..i + 1 + width]),
                },
            }
            i += 1 + width;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// The name after a `$` and how many bytes it occupies (Go's `getShellName`).
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&s[1..end + 1]), end + 2),
            None => (None, 1),
        };
    }
    if is_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let len = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if len == 0 {
        (None, 0)
    } else {
        (Some(&s[..len]), len)
    }
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

/// Expands a metric query for one app: `APP_NAME` is the app, `$$` is `$`, anything else comes
/// from the environment (unset = empty), read at every collection as the Go program does.
/// PromQL's capture-group references (`$1` in `label_replace`) stay as written: no
/// environment variable has such a name, and the file pass has already turned a YAML `$$1`
/// into `$1`, so expanding it again would destroy it.
pub fn expand_query(query: &str, app: &str) -> String {
    expand(query, |name| match name {
        "APP_NAME" => Some(app.to_string()),
        "$" => Some("$".to_string()),
        digit if digit.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some(std::env::var(name).unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(s: &str) -> String {
        // Go's rules with a fixed environment.
        expand(s, |name| {
            Some(match name {
                "A" => "a".into(),
                "A1b_c" => "x".into(),
                "A:-b" => "weird".into(),
                _ => String::new(),
            })
        })
    }

    #[test]
    fn follows_go_rules() {
        assert_eq!(go("$A"), "a");
        assert_eq!(go("${A}"), "a");
        assert_eq!(go("x${A}y"), "xay");
        assert_eq!(go("$A1b_c"), "x");
        assert_eq!(go("${A:-b}"), "weird");
        assert_eq!(go("${}rest"), "rest");
        assert_eq!(go("${A"), "A");
        assert_eq!(go("$1A"), "A");
        assert_eq!(go("$$X"), "X");
        assert_eq!(go("a $ b"), "a $ b");
        assert_eq!(go("cost$"), "cost$");
        assert_eq!(go("$(x)"), "$(x)");
        assert_eq!(go("${*}"), "");
        assert_eq!(go("$UNSET!"), "!");
    }

    #[test]
    fn query_expansion_matches_go_tests() {
        assert_eq!(expand_query("foo", "my-app"), "foo");
        assert_eq!(
            expand_query("foo $APP_NAME bar", "my-app"),
            "foo my-app bar"
        );
        assert_eq!(expand_query("foo${APP_NAME}bar", "my-app"), "foomy-appbar");
        assert_eq!(
            expand_query("label_replace(x, \"a\", \"$$1\")", "a"),
            "label_replace(x, \"a\", \"$1\")"
        );
        assert_eq!(
            expand_query("label_replace(x, \"a\", \"$1-$2\")", "a"),
            "label_replace(x, \"a\", \"$1-$2\")",
            "what a YAML `$$1` is after the file pass"
        );
    }
}
