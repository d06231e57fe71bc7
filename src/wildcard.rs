//! Wildcard app names (`my-app-*`, `*-worker`, `*`): `*` matches any run of characters and
//! nothing else is special, as in the Go program.

/// Whether `name` contains a wildcard.
pub fn is_pattern(name: &str) -> bool {
    name.contains('*')
}

/// Whether `app` matches `pattern` in full.
pub fn matches(pattern: &str, app: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = app.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        return rest.is_empty(); // no '*' at all
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(matches("*", "anything"));
        assert!(matches("*", ""));
        assert!(matches("my-app-*", "my-app-1"));
        assert!(matches("my-app-*", "my-app-"));
        assert!(!matches("my-app-*", "my-app"));
        assert!(!matches("my-app-*", "other-app"));
        assert!(matches("*-worker", "billing-worker"));
        assert!(!matches("*-worker", "billing-worker-2"));
        assert!(matches("my-*-app", "my-big-app"));
        assert!(!matches("my-*-app", "my-app"));
        assert!(matches("a*b*c", "aXbYbc"));
        assert!(matches("a*aa", "aaa"));
        assert!(!matches("a*aa", "aa"));
        assert!(matches("my-app", "my-app"));
        assert!(!matches("my-app", "my-app-2"));
        assert!(matches("my-?pp*", "my-?pp1"), "? is literal");
    }
}
