//! `Authorization` header values built from configured tokens, per API, with the rules of
//! fly-go (Machines and GraphQL APIs) and of the Go program's Prometheus client.

use crate::secret::Secret;

/// Fly API token → header, as fly-go builds it: macaroons (`fm1r_`, `fm1a_`, `fm2_`) are sent
/// as `FlyV1 m1,m2` (other tokens dropped), anything else as `Bearer t1,t2`.
pub fn fly_api(token: &Secret) -> Option<String> {
    let (macaroons, others) = split_fly_token(token.expose());
    if !macaroons.is_empty() {
        Some(format!("FlyV1 {}", macaroons.join(",")))
    } else if !others.is_empty() {
        Some(format!("Bearer {}", others.join(",")))
    } else {
        None
    }
}

/// Same scheme choice for GraphQL, but every token is sent, macaroons first.
pub fn fly_graphql(token: &Secret) -> Option<String> {
    let (macaroons, others) = split_fly_token(token.expose());
    let scheme = if macaroons.is_empty() {
        "Bearer"
    } else {
        "FlyV1"
    };
    let all: Vec<&str> = macaroons.into_iter().chain(others).collect();
    (!all.is_empty()).then(|| format!("{scheme} {}", all.join(",")))
}

/// Prometheus: a token starting with `Fly` (e.g. `FlyV1 fm2_…`) or with a `Bearer ` scheme is
/// sent as written, a bare Fly macaroon gets the `FlyV1` scheme Fly's Prometheus expects (the
/// Go program sent it as `Bearer`), anything else is sent as `Bearer <token>`.
pub fn prometheus(token: &Secret) -> Option<String> {
    let t = token.expose().trim();
    if t.is_empty() {
        None
    } else if t.starts_with("Fly") || has_scheme(t, "Bearer") {
        Some(t.to_string())
    } else if split_fly_token(t).1.is_empty() {
        Some(format!("FlyV1 {t}"))
    } else {
        Some(format!("Bearer {t}"))
    }
}

/// Temporal Cloud API keys: `Bearer <key>`.
pub fn bearer(token: &Secret) -> Option<String> {
    let t = token.expose().trim();
    (!t.is_empty()).then(|| format!("Bearer {t}"))
}

fn has_scheme(t: &str, scheme: &str) -> bool {
    t.len() > scheme.len()
        && t[..scheme.len()].eq_ignore_ascii_case(scheme)
        && t.as_bytes()[scheme.len()] == b' '
}

/// fly-go's `tokens.Parse`: strip `FlyV1 `/`Bearer ` schemes, split on commas, and sort the
/// pieces into macaroons and other tokens.
fn split_fly_token(s: &str) -> (Vec<&str>, Vec<&str>) {
    let mut rest = s.trim();
    loop {
        let stripped = ["FlyV1", "Bearer"]
            .iter()
            .find(|scheme| has_scheme(rest, scheme))
            .map(|scheme| rest[scheme.len() + 1..].trim_start());
        match stripped {
            Some(r) => rest = r,
            None => break,
        }
    }
    let mut macaroons = Vec::new();
    let mut others = Vec::new();
    for piece in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let prefix = piece.split('_').next().unwrap_or("");
        if piece.contains('_') && matches!(prefix, "fm1r" | "fm1a" | "fm2") {
            macaroons.push(piece);
        } else {
            others.push(piece);
        }
    }
    (macaroons, others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Secret {
        Secret::new(v)
    }

    #[test]
    fn fly_go_rules() {
        let cases = [
            (
                "FlyV1 fm2_AAA,fm2_BBB",
                "FlyV1 fm2_AAA,fm2_BBB",
                "FlyV1 fm2_AAA,fm2_BBB",
            ),
            ("fm2_AAA", "FlyV1 fm2_AAA", "FlyV1 fm2_AAA"),
            ("Bearer 0123abcd", "Bearer 0123abcd", "Bearer 0123abcd"),
            (
                "fm2_AAA,fo1_user",
                "FlyV1 fm2_AAA",
                "FlyV1 fm2_AAA,fo1_user",
            ),
            ("FlyV1 Bearer x", "Bearer x", "Bearer x"),
        ];
        for (token, flaps, graphql) in cases {
            assert_eq!(fly_api(&s(token)).as_deref(), Some(flaps), "{token}");
            assert_eq!(fly_graphql(&s(token)).as_deref(), Some(graphql), "{token}");
        }
        assert_eq!(fly_api(&s("")), None);
    }

    #[test]
    fn prometheus_rules() {
        assert_eq!(
            prometheus(&s("FlyV1 fm2_x")).as_deref(),
            Some("FlyV1 fm2_x")
        );
        assert_eq!(prometheus(&s("fm2_x")).as_deref(), Some("FlyV1 fm2_x"));
        assert_eq!(prometheus(&s("abc")).as_deref(), Some("Bearer abc"));
        assert_eq!(prometheus(&s("Bearer abc")).as_deref(), Some("Bearer abc"));
        assert_eq!(prometheus(&s("")), None);
        assert_eq!(bearer(&s("key")).as_deref(), Some("Bearer key"));
    }
}
