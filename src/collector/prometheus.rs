//! Prometheus: instant queries (`/api/v1/query`) as the Go program sends them (a form POST
//! with `query` and `time`, falling back to GET when the server refuses POST), range queries
//! (`/api/v1/query_range`) for history, and per-machine values for the stop order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use ureq::Agent;

use super::{Collector, SourceError, SourceErrorKind};
use crate::auth;
use crate::clock::{self, Stamp};
use crate::config::CollectorConfig;
use crate::expand::expand_query;
use crate::http::{self, Deadline, Redirects, Reply, Transport};

/// The most points Prometheus returns for one series of a range query is 11,000; ranges are
/// cut below it.
pub const MAX_RANGE_POINTS: i64 = 10_000;

/// One Prometheus server, with its token.
pub struct PrometheusClient {
    base: String,
    /// The address for messages, without credentials.
    shown: String,
    authorization: Option<String>,
    agent: Agent,
}

impl PrometheusClient {
    pub fn new(c: &CollectorConfig) -> PrometheusClient {
        PrometheusClient {
            base: c.address.trim_end_matches('/').to_string(),
            shown: http::redact_url(&c.address),
            authorization: auth::prometheus(&c.token),
            agent: http::agent(None, Redirects::FollowWithoutCredentials),
        }
    }

    fn error(&self, kind: SourceErrorKind) -> SourceError {
        SourceError {
            source: format!("prometheus {}", self.shown),
            kind,
            hint: String::new(),
        }
    }

    /// A form POST to `path`, or a GET when the server refuses POST (405, 501).
    fn query(
        &self,
        path: &str,
        params: &[(&str, &str)],
        deadline: Deadline,
    ) -> Result<Reply, SourceError> {
        let endpoint = format!("{}{path}", self.base);
        let started = Instant::now();
        let send = |get: bool| {
            http::exchange(deadline, |timeout| {
                if get {
                    let mut req = self
                        .agent
                        .get(&endpoint)
                        .query_pairs(params.iter().copied());
                    if let Some(a) = &self.authorization {
                        req = req.header("Authorization", a);
                    }
                    req.config().timeout_global(Some(timeout)).build().call()
                } else {
                    let mut req = self.agent.post(&endpoint);
                    if let Some(a) = &self.authorization {
                        req = req.header("Authorization", a);
                    }
                    req.config()
                        .timeout_global(Some(timeout))
                        .build()
                        .send_form(params.iter().copied())
                }
            })
        };
        let mut reply = send(false);
        if let Ok(r) = &reply {
            if r.status == 405 || r.status == 501 {
                reply = send(true);
            }
        }
        reply.map_err(|t| match t {
            Transport::Timeout => self.error(SourceErrorKind::Timeout(started.elapsed())),
            other => self.error(SourceErrorKind::Transport(other)),
        })
    }

    /// An instant query's value: the first sample of a vector, or a scalar.
    pub fn value(&self, app: &str, query: &str, deadline: Deadline) -> Result<f64, SourceError> {
        let now = seconds(clock::now());
        let reply = self.query(
            "/api/v1/query",
            &[("query", query), ("time", &now)],
            deadline,
        )?;
        let (value, warnings) =
            parse_response(&reply).map_err(|m| self.error(SourceErrorKind::Answer(m)))?;
        if !warnings.is_empty() {
            log::warn!(app, warnings = warnings.join("; ").as_str(); "prometheus");
        }
        Ok(value)
    }

    /// An instant query's samples by their `instance` label (the machine id).
    pub fn by_instance(
        &self,
        query: &str,
        deadline: Deadline,
    ) -> Result<HashMap<String, f64>, SourceError> {
        let now = seconds(clock::now());
        let reply = self.query(
            "/api/v1/query",
            &[("query", query), ("time", &now)],
            deadline,
        )?;
        let data = envelope(&reply).map_err(|m| self.error(SourceErrorKind::Answer(m)))?;
        let samples = data
            .result
            .as_array()
            .filter(|_| data.result_type == "vector")
            .ok_or_else(|| {
                self.error(SourceErrorKind::Answer(format!(
                    "stop-priority-query must return an instant vector, got {:?}",
                    data.result_type
                )))
            })?;
        Ok(samples
            .iter()
            .filter_map(|s| {
                let id = s.get("metric")?.get("instance")?.as_str()?;
                let value = s.get("value")?.get(1)?.as_str()?.parse::<f64>().ok()?;
                Some((id.to_string(), value))
            })
            .collect())
    }

    /// A range query's first series from `from` to `to` (at most [`MAX_RANGE_POINTS`]
    /// steps): `(time, value)` where it has a sample.
    pub fn range(
        &self,
        query: &str,
        from: Stamp,
        to: Stamp,
        step: Duration,
        deadline: Deadline,
    ) -> Result<Vec<(Stamp, f64)>, SourceError> {
        let (start, end) = (seconds(from), seconds(to));
        let step = format!("{}", step.as_secs_f64());
        let reply = self.query(
            "/api/v1/query_range",
            &[
                ("query", query),
                ("start", &start),
                ("end", &end),
                ("step", &step),
            ],
            deadline,
        )?;
        let data = envelope(&reply).map_err(|m| self.error(SourceErrorKind::Answer(m)))?;
        if data.result_type != "matrix" {
            return Err(self.error(SourceErrorKind::Answer(format!(
                "unexpected prometheus result type {:?} for a range query",
                data.result_type
            ))));
        }
        let values = data
            .result
            .get(0)
            .and_then(|series| series.get("values"))
            .and_then(Value::as_array);
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|pair| {
                let at = pair.get(0)?.as_f64()?;
                let value = pair.get(1)?.as_str()?.parse::<f64>().ok()?;
                Some(((at * 1000.0).round() as Stamp, value))
            })
            .collect())
    }
}

/// Unix seconds with milliseconds, as Prometheus takes times.
fn seconds(at: Stamp) -> String {
    format!("{}.{:03}", at.div_euclid(1000), at.rem_euclid(1000))
}

pub struct PrometheusCollector {
    metric: String,
    query: String,
    client: PrometheusClient,
}

impl PrometheusCollector {
    pub fn new(c: &CollectorConfig) -> PrometheusCollector {
        PrometheusCollector {
            metric: c.metric_name.clone(),
            query: c.query.clone(),
            client: PrometheusClient::new(c),
        }
    }
}

impl Collector for PrometheusCollector {
    fn metric_name(&self) -> &str {
        &self.metric
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError> {
        self.client
            .value(app, &expand_query(&self.query, app), deadline)
    }

    fn range(
        &self,
        app: &str,
        from: Stamp,
        to: Stamp,
        step: Duration,
        deadline: Deadline,
    ) -> Option<Result<Vec<(Stamp, f64)>, SourceError>> {
        Some(
            self.client
                .range(&expand_query(&self.query, app), from, to, step, deadline),
        )
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
    let (data, warnings) = envelope_with_warnings(reply)?;
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
    Ok((value, warnings))
}

fn envelope(reply: &Reply) -> Result<Data, String> {
    envelope_with_warnings(reply).map(|(data, _)| data)
}

/// The `data` of a successful response; errors are one line.
fn envelope_with_warnings(reply: &Reply) -> Result<(Data, Vec<String>), String> {
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
    Ok((data, envelope.warnings.unwrap_or_default()))
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
