//! Prometheus instant queries (`/api/v1/query`), as the Go program sends them: a form POST
//! with `query` and `time`, falling back to GET when the server refuses POST.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use ureq::Agent;

use super::{Collector, SourceError, SourceErrorKind};
use crate::auth;
use crate::config::CollectorConfig;
use crate::expand::expand_query;
use crate::http::{self, Deadline, Redirects, Reply, Transport};

pub struct PrometheusCollector {
    metric: String,
    endpoint: String,
    /// The address for messages, without credentials.
    shown: String,
    query: String,
    authorization: Option<String>,
    agent: Agent,
}

impl PrometheusCollector {
    pub fn new(c: &CollectorConfig) -> PrometheusCollector {
        PrometheusCollector {
            metric: c.metric_name.clone(),
            endpoint: format!("{}/api/v1/query", c.address.trim_end_matches('/')),
            shown: http::redact_url(&c.address),
            query: c.query.clone(),
            authorization: auth::prometheus(&c.token),
            agent: http::agent(None, Redirects::FollowWithoutCredentials),
        }
    }

    fn send(&self, query: &str, deadline: Deadline, get: bool) -> Result<Reply, Transport> {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
            .to_string();
        let params = [("query", query), ("time", time.as_str())];
        http::exchange(deadline, |timeout| {
            if get {
                let mut req = self.agent.get(&self.endpoint).query_pairs(params);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.config().timeout_global(Some(timeout)).build().call()
            } else {
                let mut req = self.agent.post(&self.endpoint);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.config()
                    .timeout_global(Some(timeout))
                    .build()
                    .send_form(params)
            }
        })
    }
}

impl Collector for PrometheusCollector {
    fn metric_name(&self) -> &str {
        &self.metric
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError> {
        let query = expand_query(&self.query, app);
        let started = Instant::now();
        let fail = |kind| SourceError {
            source: format!("prometheus {}", self.shown),
            kind,
            hint: "",
        };
        let mut reply = self.send(&query, deadline, false);
        if let Ok(r) = &reply {
            if r.status == 405 || r.status == 501 {
                reply = self.send(&query, deadline, true);
            }
        }
        let reply = reply.map_err(|t| match t {
            Transport::Timeout => fail(SourceErrorKind::Timeout(started.elapsed())),
            other => fail(SourceErrorKind::Transport(other)),
        })?;
        let (value, warnings) =
            parse_response(&reply).map_err(|m| fail(SourceErrorKind::Answer(m)))?;
        if !warnings.is_empty() {
            log::warn!(app, metric = self.metric.as_str(), warnings = warnings.join("; ").as_str(); "prometheus");
        }
        Ok(value)
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType", default)]
    result_type: String,
    #[serde(default)]
    result: Value,
}

/// The number in a query response, with any warnings; errors are one line.
fn parse_response(reply: &Reply) -> Result<(f64, Vec<String>), String> {
    let Ok(envelope) = serde_json::from_str::<Envelope>(&reply.body) else {
        let hint = if reply.status == 404 || reply.is_success() {
            "; is the address the Prometheus base URL (the part before /api/v1)?"
        } else {
            ""
        };
        let kind = match reply.content_type.split(';').next().unwrap_or("").trim() {
            "" => String::new(),
            ct => format!(" ({ct})"),
        };
        return Err(format!(
            "HTTP {} with a non-JSON body{kind}: {}{hint}",
            reply.status,
            reply.excerpt()
        ));
    };
    if envelope.status == "error" || envelope.error.is_some() {
        return Err(format!(
            "{}: {} (HTTP {})",
            envelope.error_type.as_deref().unwrap_or("error"),
            envelope.error.as_deref().unwrap_or("no message"),
            reply.status
        ));
    }
    if !reply.is_success() {
        return Err(format!("HTTP {} without an error message", reply.status));
    }
    let data = envelope.data.ok_or("response has no data")?;
    let sample = match data.result_type.as_str() {
        "vector" => match data.result.as_array().and_then(|v| v.first()) {
            Some(first) => first.get("value").cloned().unwrap_or(Value::Null),
            None => {
                return Err("empty prometheus result: the query matched no series; \
                            append \"or vector(0)\" to the query to read that as 0"
                    .to_string());
            }
        },
        "scalar" => data.result,
        other => {
            return Err(format!(
                "unexpected prometheus result type {other:?}: the query must return an instant vector or a scalar, \
                 e.g. sum(rate(x[1m])) instead of x[1m]"
            ));
        }
    };
    let text = sample
        .get(1)
        .and_then(Value::as_str)
        .ok_or("malformed sample in response")?;
    let value = text
        .parse::<f64>()
        .map_err(|_| format!("cannot parse prometheus result as float64: {text:?}"))?;
    Ok((value, envelope.warnings.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: body.into(),
            ..Reply::default()
        }
    }

    fn value(body: &str) -> Result<f64, String> {
        parse_response(&reply(200, body)).map(|(v, _)| v)
    }

    #[test]
    fn vector_scalar_and_special_values() {
        let v = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795831159.825,"35"]},{"metric":{},"value":[1,"9"]}]}}"#;
        assert_eq!(value(v), Ok(35.0));
        let s =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1795831162.65,"2.5"]}}"#;
        assert_eq!(value(s), Ok(2.5));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(value(nan).unwrap().is_nan());
        let inf = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(value(inf), Ok(f64::INFINITY));
    }

    #[test]
    fn errors() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(
            value(empty)
                .unwrap_err()
                .starts_with("empty prometheus result")
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            value(matrix)
                .unwrap_err()
                .starts_with("unexpected prometheus result type \"matrix\"")
        );
        let string = r#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#;
        assert!(value(string).unwrap_err().contains("\"string\""));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:27: parse error: unclosed left parenthesis"}"#;
        assert_eq!(
            parse_response(&reply(400, bad)).unwrap_err(),
            "bad_data: invalid parameter \"query\": 1:27: parse error: unclosed left parenthesis (HTTP 400)"
        );
        let html = Reply {
            content_type: "text/html; charset=utf-8".into(),
            ..reply(
                502,
                "<html><head><title>502 Bad Gateway</title></head></html>",
            )
        };
        assert_eq!(
            parse_response(&html).unwrap_err(),
            "HTTP 502 with a non-JSON body (text/html): \"502 Bad Gateway\""
        );
    }

    #[test]
    fn warnings_are_returned_with_the_value() {
        let w = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"3"]}]},"warnings":["remote_read: down"]}"#;
        assert_eq!(
            parse_response(&reply(200, w)),
            Ok((3.0, vec!["remote_read: down".to_string()]))
        );
    }
}
