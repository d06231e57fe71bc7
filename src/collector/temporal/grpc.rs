//! Running-workflow counts over Temporal's gRPC API, as the Go program and Temporal's SDKs
//! ask for them: `temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions`
//! on a bare `host:port` address. This is the transport Temporal Cloud serves.
//!
//! TLS is used when a client certificate, a CA or an API key is configured (the Go SDK turns
//! TLS on for certificates and API keys), cleartext h2c otherwise. An API key goes out as
//! `authorization: Bearer <key>` with `temporal-namespace: <namespace>`, as the SDKs send
//! them; the namespace header is sent on every call (it only routes).

use std::time::Instant;

use super::running_query;
use crate::auth;
use crate::collector::{Collector, SourceError, SourceErrorKind};
use crate::config::CollectorConfig;
use crate::grpc::proto::{self, Reader, Value};
use crate::grpc::{Channel, Code, Status, Target, Tls, TlsFiles};
use crate::http::{self, Deadline};

const COUNT: &str = "/temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions";

pub struct TemporalGrpcCollector {
    metric: String,
    /// `gRPC host:port` or `gRPC+TLS host:port`, for messages.
    shown: String,
    namespace: String,
    query: String,
    authorization: Option<String>,
    api_key: bool,
    client_cert: bool,
    channel: Channel,
}

impl TemporalGrpcCollector {
    pub fn new(c: &CollectorConfig) -> Result<TemporalGrpcCollector, String> {
        let target = Target::parse(&c.address)
            .map_err(|e| format!("invalid temporal address {:?}: {e}", c.address))?;
        let client_cert = !c.cert_data.is_empty() || !c.key_data.is_empty();
        let api_key = !c.api_key.expose().trim().is_empty();
        let tls = if client_cert || api_key || !c.ca_data.trim().is_empty() {
            Some(Tls::new(
                &target,
                &TlsFiles {
                    cert_pem: &c.cert_data,
                    key_pem: &c.key_data,
                    ca_pem: &c.ca_data,
                },
            )?)
        } else {
            None
        };
        let shown = format!(
            "{} {}",
            if tls.is_some() { "gRPC+TLS" } else { "gRPC" },
            target.authority()
        );
        Ok(TemporalGrpcCollector {
            metric: c.metric_name.clone(),
            shown,
            namespace: c.namespace_or_default().to_string(),
            query: c.query.clone(),
            authorization: auth::bearer(&c.api_key),
            api_key,
            client_cert,
            channel: Channel::new(target, tls, &http::user_agent()),
        })
    }

    /// One line: where, which namespace, the status, and what to change.
    fn describe(&self, status: &Status) -> SourceError {
        let ns = &self.namespace;
        let hint = match status.code {
            Code::NotFound => " (namespace (FAS_TEMPORAL_NAMESPACE) must exist on this server; a Temporal Cloud namespace is <name>.<account>)".to_string(),
            Code::InvalidArgument => " (check query (FAS_TEMPORAL_QUERY): it is sent as ExecutionStatus=\"Running\" AND (<query>))".to_string(),
            Code::Unauthenticated if self.api_key || self.client_cert => " (the server refused the credentials: check that api-key (TEMPORAL_API_KEY) is valid and not expired, or that cert-data is signed by a CA the namespace accepts)".to_string(),
            Code::Unauthenticated => " (the server wants credentials: set api-key (TEMPORAL_API_KEY), or cert-data and key-data (TEMPORAL_TLS_CERT_DATA, TEMPORAL_TLS_KEY_DATA))".to_string(),
            Code::PermissionDenied => format!(
                " (the credentials may not read namespace {ns:?}: grant the API key's user or service account access to it; a Temporal Cloud namespace is <name>.<account>)"
            ),
            Code::Unavailable if status.message.contains("HTTP/1") => " (Temporal's HTTP API wants an http:// or https:// address; gRPC is on port 7233 by default)".to_string(),
            Code::Unavailable if status.message.contains("want TLS") => " (a bare host:port is cleartext unless api-key, cert-data/key-data or ca-data is set)".to_string(),
            Code::Unavailable if status.message.contains("corrupt message") => {
                " (is the server cleartext? TLS is on because api-key, cert-data/key-data or ca-data is set)".to_string()
            }
            Code::DeadlineExceeded => " (the reconcile's timeout, FAS_TIMEOUT)".to_string(),
            Code::Unimplemented => " (is this a Temporal frontend?)".to_string(),
            _ => String::new(),
        };
        let text = status.to_string();
        SourceError {
            source: format!("temporal {} namespace {ns:?}", self.shown),
            kind: if status.code == Code::DeadlineExceeded {
                SourceErrorKind::TimedOut(text)
            } else {
                SourceErrorKind::Answer(text)
            },
            hint,
        }
    }
}

/// `CountWorkflowExecutionsRequest { string namespace = 1; string query = 2; }`
pub fn count_request(namespace: &str, query: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + query.len() + 8);
    proto::put_string(&mut out, 1, namespace);
    proto::put_string(&mut out, 2, query);
    out
}

/// `CountWorkflowExecutionsResponse { int64 count = 1; repeated AggregationGroup groups = 2; }`:
/// the count (0 when absent, as proto3 leaves zero out); other fields are skipped.
pub fn count_response(message: &[u8]) -> Result<i64, String> {
    let mut reader = Reader::new(message);
    let mut count = 0;
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Varint(v)) => count = v as i64,
            (1, other) => return Err(format!("count has the wrong wire type ({other:?})")),
            _ => {}
        }
    }
    Ok(count)
}

impl Collector for TemporalGrpcCollector {
    fn metric_name(&self) -> &str {
        &self.metric
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError> {
        let started = Instant::now();
        let request = count_request(&self.namespace, &running_query(&self.query, app));
        let mut metadata = vec![("temporal-namespace", self.namespace.as_str())];
        if let Some(a) = &self.authorization {
            metadata.push(("authorization", a.as_str()));
        }
        let reply = self
            .channel
            .unary(COUNT, &metadata, &request, deadline)
            .map_err(|status| self.describe(&status))?;
        let count = count_response(&reply).map_err(|e| {
            self.describe(&Status::new(
                Code::Internal,
                format!("a CountWorkflowExecutions response that does not parse: {e}"),
            ))
        })?;
        log::debug!(
            "temporal {} namespace {:?}: count {count} in {:.1} ms",
            self.shown,
            self.namespace,
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn collector(address: &str, api_key: &str) -> TemporalGrpcCollector {
        TemporalGrpcCollector::new(&CollectorConfig {
            kind: crate::config::CollectorKind::Temporal,
            metric_name: "wf".into(),
            address: address.into(),
            namespace: "jobs".into(),
            api_key: Secret::new(api_key),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn messages_are_encoded_and_decoded_by_field_number() {
        let req = count_request("default", "ExecutionStatus=\"Running\"");
        assert_eq!(&req[..9], b"\x0a\x07default");
        assert_eq!(req[9], 0x12);
        assert_eq!(
            count_response(&[]).unwrap(),
            0,
            "proto3 leaves a zero count out"
        );
        assert_eq!(count_response(&[0x08, 0x03]).unwrap(), 3);
        assert_eq!(count_response(&[0x08, 0xac, 0x02]).unwrap(), 300);
        // A GROUP BY answer: groups (field 2) are skipped.
        assert_eq!(
            count_response(&[0x08, 0x05, 0x12, 0x04, 0x0a, 0x00, 0x10, 0x04]).unwrap(),
            5
        );
        assert!(
            count_response(&[0x0a, 0x01, 0x00]).is_err(),
            "count as bytes"
        );
        assert!(count_response(&[0x08]).is_err());
    }

    #[test]
    fn tls_only_with_credentials_or_a_ca() {
        assert_eq!(collector("h:7233", "").shown, "gRPC h:7233");
        let with_key = collector("ns.acct.tmprl.cloud:7233", "k");
        assert_eq!(with_key.shown, "gRPC+TLS ns.acct.tmprl.cloud:7233");
        assert_eq!(with_key.authorization.as_deref(), Some("Bearer k"));
        assert!(with_key.channel.is_tls());
        let err = TemporalGrpcCollector::new(&CollectorConfig {
            address: "h".into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            err.starts_with("invalid temporal address \"h\": a port is missing"),
            "{err}"
        );
    }

    #[test]
    fn each_status_is_one_line_with_the_namespace_and_a_fix() {
        let c = collector("127.0.0.1:7233", "");
        let line = |code, msg: &str| c.describe(&Status::new(code, msg)).to_string();
        assert_eq!(
            line(Code::NotFound, "Namespace jobs is not found."),
            "temporal gRPC 127.0.0.1:7233 namespace \"jobs\": NOT_FOUND: Namespace jobs is not found. (namespace (FAS_TEMPORAL_NAMESPACE) must exist on this server; a Temporal Cloud namespace is <name>.<account>)"
        );
        for (code, want) in [
            (Code::InvalidArgument, "INVALID_ARGUMENT: m (check query"),
            (
                Code::Unauthenticated,
                "UNAUTHENTICATED: m (the server wants credentials: set api-key",
            ),
            (
                Code::PermissionDenied,
                "PERMISSION_DENIED: m (the credentials may not read namespace \"jobs\"",
            ),
            (Code::Unavailable, "UNAVAILABLE: m"),
            (
                Code::DeadlineExceeded,
                "DEADLINE_EXCEEDED: m (the reconcile's timeout",
            ),
        ] {
            let got = line(code, "m");
            assert!(got.contains(want), "{got}");
            assert!(!got.contains('\n'));
        }
        let keyed = collector("h:1", "secret-key");
        let got = keyed
            .describe(&Status::new(Code::Unauthenticated, "bad key"))
            .to_string();
        assert!(got.contains("refused the credentials"), "{got}");
        assert!(!got.contains("secret-key"));
    }
}
