//! Running-workflow counts from Temporal's HTTP API (`GET /api/v1/namespaces/{ns}/
//! workflow-count`), served by Temporal servers since 1.22 next to gRPC, so no gRPC stack is
//! needed. The Go program dialled gRPC `host:port`; here `address` is the HTTP API base URL.
//! A bare `host:port` is accepted and gets `https://` when TLS or an API key is configured,
//! `http://` otherwise.

use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;
use ureq::Agent;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::{Collector, SourceError, SourceErrorKind};
use crate::auth;
use crate::config::CollectorConfig;
use crate::expand::expand_query;
use crate::http::{self, Deadline, Redirects, Transport, encode_query_value};

pub struct TemporalCollector {
    metric: String,
    base: String,
    namespace: String,
    query: String,
    authorization: Option<String>,
    agent: Agent,
}

impl TemporalCollector {
    pub fn new(c: &CollectorConfig) -> Result<TemporalCollector, String> {
        let tls = tls_config(c)?;
        let base = if c.address.contains("://") {
            c.address.trim_end_matches('/').to_string()
        } else if tls.is_some() || !c.api_key.is_empty() {
            format!("https://{}", c.address.trim_end_matches('/'))
        } else {
            format!("http://{}", c.address.trim_end_matches('/'))
        };
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(format!(
                "invalid temporal address {:?}: use the HTTP API URL, e.g. http://temporal:7243",
                http::redact_url(&c.address)
            ));
        }
        Ok(TemporalCollector {
            metric: c.metric_name.clone(),
            base,
            namespace: c.namespace_or_default().to_string(),
            query: c.query.clone(),
            authorization: auth::bearer(&c.api_key),
            agent: http::agent(tls, Redirects::FollowWithoutCredentials),
        })
    }

    /// The visibility query: running executions, narrowed by the configured filter.
    fn visibility_query(&self, app: &str) -> String {
        let q = if self.query.trim().is_empty() {
            "ExecutionStatus=\"Running\"".to_string()
        } else {
            format!("ExecutionStatus=\"Running\" AND ({})", self.query)
        };
        expand_query(&q, app)
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
            encode_query_value(&self.namespace),
            encode_query_value(&self.visibility_query(app))
        );
        let started = Instant::now();
        let fail = |kind| SourceError {
            source: format!("temporal {} namespace {:?}", self.base, self.namespace),
            kind,
            hint: if self.base.ends_with(":7233") {
                " (7233 is Temporal's gRPC port; this collector needs the HTTP API, port 7243 by default)"
            } else {
                ""
            },
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
            collector("h:1", "").visibility_query("a"),
            "ExecutionStatus=\"Running\""
        );
        assert_eq!(
            collector("h:1", "WorkflowType=\"$APP_NAME\"").visibility_query("my-app"),
            "ExecutionStatus=\"Running\" AND (WorkflowType=\"my-app\")"
        );
    }

    #[test]
    fn bare_address_rule() {
        assert_eq!(collector("temporal:7243", "").base, "http://temporal:7243");
        assert_eq!(
            collector("https://t.example/", "").base,
            "https://t.example"
        );
        let with_key = TemporalCollector::new(&CollectorConfig {
            address: "ns.acct.tmprl.cloud:7233".into(),
            api_key: Secret::new("k"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(with_key.base, "https://ns.acct.tmprl.cloud:7233");
        assert_eq!(with_key.namespace, "default");
    }

    #[test]
    fn bad_pem_is_reported_without_its_content() {
        let err = TemporalCollector::new(&CollectorConfig {
            address: "h:1".into(),
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
