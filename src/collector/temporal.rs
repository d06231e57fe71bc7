//! Running-workflow counts from Temporal. The address picks the API, as in the Go program: a
//! bare `host:port` is gRPC (`grpc.rs`, what Temporal Cloud serves); an `http://` or
//! `https://` URL is the HTTP API (`GET /api/v1/namespaces/{ns}/workflow-count`, this file),
//! served by Temporal servers since 1.22 next to gRPC.

mod grpc;

use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;
use ureq::Agent;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::{Collector, SourceError, SourceErrorKind};
use crate::auth;
use crate::config::CollectorConfig;
use crate::expand::expand_query;
use crate::http::{self, Deadline, Redirects, Transport, percent_encode};

/// The collector for `c`: HTTP API for an `http(s)://` address, gRPC for `host:port`.
pub fn build(c: &CollectorConfig) -> Result<Box<dyn Collector>, String> {
    if is_http_url(&c.address) {
        Ok(Box::new(TemporalCollector::new(c)?))
    } else {
        Ok(Box::new(grpc::TemporalGrpcCollector::new(c)?))
    }
}

pub fn is_http_url(address: &str) -> bool {
    let a = address.trim_start();
    a.starts_with("http://") || a.starts_with("https://")
}

/// The visibility query: running executions, narrowed by the configured filter.
fn running_query(filter: &str, app: &str) -> String {
    let q = if filter.trim().is_empty() {
        "ExecutionStatus=\"Running\"".to_string()
    } else {
        format!("ExecutionStatus=\"Running\" AND ({filter})")
    };
    expand_query(&q, app)
}

pub struct TemporalCollector {
    metric: String,
    base: String,
    /// `base` without credentials, for messages.
    shown: String,
    namespace: String,
    query: String,
    authorization: Option<String>,
    agent: Agent,
}

impl TemporalCollector {
    pub fn new(c: &CollectorConfig) -> Result<TemporalCollector, String> {
        let tls = tls_config(c)?;
        let base = c.address.trim().trim_end_matches('/').to_string();
        if !is_http_url(&base) {
            return Err(format!(
                "invalid temporal address {:?}: the HTTP API needs a URL, e.g. http://temporal:7243",
                http::redact_url(&c.address)
            ));
        }
        Ok(TemporalCollector {
            metric: c.metric_name.clone(),
            shown: http::redact_url(&base),
            base,
            namespace: c.namespace_or_default().to_string(),
            query: c.query.clone(),
            authorization: auth::bearer(&c.api_key),
            agent: http::agent(tls, Redirects::FollowWithoutCredentials),
        })
    }

    fn visibility_query(&self, app: &str) -> String {
        running_query(&self.query, app)
    }
}

/// Client certificate (mTLS) and extra trusted CA from the config; `None` = default TLS
/// (bundled roots). Server certificates are always verified.
fn tls_config(c: &CollectorConfig) -> Result<Option<TlsConfig>, String> {
    if c.cert_data.is_empty() && c.key_data.is_empty() && c.ca_data.is_empty() {
        return Ok(None);
    }
    let mut builder = TlsConfig::builder();
    if !c.cert_data.is_empty() || !c.key_data.is_empty() {
        let certs = certificates(&c.cert_data, "cert-data")?;
        let key = PrivateKey::from_pem(c.key_data.expose().as_bytes()).map_err(|_| {
            "key-data holds no PEM private key (expected -----BEGIN ... PRIVATE KEY-----)"
                .to_string()
        })?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&certs, key)));
    }
    if !c.ca_data.is_empty() {
        builder = builder.root_certs(RootCerts::new_with_certs(&certificates(
            &c.ca_data, "ca-data",
        )?));
    }
    Ok(Some(builder.build()))
}

fn certificates(pem: &str, key: &str) -> Result<Vec<Certificate<'static>>, String> {
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem.as_bytes())
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        // The parser's error quotes the offending line: never show it, it may be key material.
        .map_err(|_| format!("{key} is not valid PEM (expected -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// What to change when an HTTP API URL names Temporal's gRPC port: the Go program's bare
/// address (gRPC here too), or the HTTP API's own port.
fn grpc_port_hint(shown: &str) -> String {
    match shown.split_once("://") {
        Some((scheme, host_port)) if host_port.ends_with(":7233") => format!(
            " (7233 is Temporal's gRPC port: for gRPC, as the Go program takes it, set the address to {host_port} without {scheme}://; for the HTTP API keep {scheme}:// and use its port, 7243 by default)"
        ),
        _ => String::new(),
    }
}

#[derive(Deserialize)]
struct CountResponse {
    /// int64 in proto3 JSON is a string; a zero count is omitted entirely.
    #[serde(default)]
    count: Option<Value>,
}

#[derive(Deserialize)]
struct StatusBody {
    #[serde(default)]
    message: String,
}

impl Collector for TemporalCollector {
    fn metric_name(&self) -> &str {
        &self.metric
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError> {
        let url = format!(
            "{}/api/v1/namespaces/{}/workflow-count?query={}",
            self.base,
            percent_encode(&self.namespace),
            percent_encode(&self.visibility_query(app))
        );
        let started = Instant::now();
        let fail = |kind| SourceError {
            source: format!("temporal {} namespace {:?}", self.shown, self.namespace),
            kind,
            hint: grpc_port_hint(&self.shown),
        };
        let answer = |m: String| fail(SourceErrorKind::Answer(m));
        let reply = http::exchange(deadline, |timeout| {
            let mut req = self.agent.get(&url);
            if let Some(a) = &self.authorization {
                // The HTTP gateway turns Grpc-Metadata-* headers into gRPC metadata, which is
                // how Temporal Cloud routes API-key requests to a namespace.
                req = req
                    .header("Authorization", a)
                    .header("Grpc-Metadata-Temporal-Namespace", &self.namespace);
            }
            req.config().timeout_global(Some(timeout)).build().call()
        })
        .map_err(|t| match t {
            Transport::Timeout => fail(SourceErrorKind::Timeout(started.elapsed())),
            other => fail(SourceErrorKind::Transport(other)),
        })?;
        if !reply.is_success() {
            let message = serde_json::from_str::<StatusBody>(&reply.body)
                .ok()
                .filter(|b| !b.message.is_empty())
                .map_or_else(|| reply.excerpt(), |b| b.message);
            return Err(answer(format!("{message} (HTTP {})", reply.status)));
        }
        let parsed: CountResponse = serde_json::from_str(&reply.body).map_err(|_| {
            answer(format!(
                "HTTP {} with a body that is not a workflow count: {}",
                reply.status,
                reply.excerpt()
            ))
        })?;
        match parsed.count {
            None => Ok(0.0),
            Some(Value::String(s)) => s
                .parse::<i64>()
                .map(|n| n as f64)
                .map_err(|_| answer(format!("count {s:?} is not an integer"))),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| answer("count is not a number".into())),
            Some(other) => Err(answer(format!("count {other} is not a number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn collector(address: &str, query: &str) -> TemporalCollector {
        TemporalCollector::new(&CollectorConfig {
            kind: crate::config::CollectorKind::Temporal,
            metric_name: "wf".into(),
            address: address.into(),
            query: query.into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn query_wraps_the_filter_and_expands_app_name() {
        assert_eq!(
            collector("http://h:1", "").visibility_query("a"),
            "ExecutionStatus=\"Running\""
        );
        assert_eq!(
            collector("http://h:1", "WorkflowType=\"$APP_NAME\"").visibility_query("my-app"),
            "ExecutionStatus=\"Running\" AND (WorkflowType=\"my-app\")"
        );
    }

    #[test]
    fn the_grpc_port_in_a_url_says_what_to_write() {
        assert_eq!(
            grpc_port_hint("http://temporal:7233"),
            " (7233 is Temporal's gRPC port: for gRPC, as the Go program takes it, set the address to temporal:7233 without http://; for the HTTP API keep http:// and use its port, 7243 by default)"
        );
        assert!(grpc_port_hint("https://ns.acct.tmprl.cloud:7233").contains(
            "set the address to ns.acct.tmprl.cloud:7233 without https://; for the HTTP API keep https://"
        ));
        assert_eq!(grpc_port_hint("http://temporal:7243"), "");
        let with_password = collector("http://user:secret@temporal:7233", "");
        assert_eq!(with_password.shown, "http://temporal:7233");
    }

    #[test]
    fn urls_are_the_http_api_and_bare_addresses_grpc() {
        assert_eq!(
            collector("https://t.example/", "").base,
            "https://t.example"
        );
        assert_eq!(collector("http://h:7243", "").namespace, "default");
        assert!(is_http_url("http://h:7243") && is_http_url("https://h"));
        assert!(!is_http_url("h:7233") && !is_http_url("dns:///h:7233"));
        let grpc = build(&CollectorConfig {
            address: "ns.acct.tmprl.cloud:7233".into(),
            metric_name: "wf".into(),
            api_key: Secret::new("k"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(grpc.metric_name(), "wf");
        assert!(
            TemporalCollector::new(&CollectorConfig {
                address: "h:7243".into(),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn bad_pem_is_reported_without_its_content() {
        let err = TemporalCollector::new(&CollectorConfig {
            address: "http://h:1".into(),
            cert_data: "-----BEGIN CERTIFICATE-----...".into(),
            key_data: Secret::new("-----BEGIN EC PRIVATE KEY-----secretstuff"),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.contains("cert-data"), "{err}");
        assert!(!err.contains("secretstuff"));
    }
}
