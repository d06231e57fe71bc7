//! Redis: the sum of a few read-only counting commands (`LLEN queue:default`, `ZCARD …`),
//! where Sidekiq, Laravel, BullMQ, Celery and RQ keep their queues. Commands are checked at
//! start-up against a list of read-only counting commands and their arities; keys are
//! `$APP_NAME`-expanded at every collection.

use std::time::Instant;

use redis::Value;

use super::{Collector, SourceError, SourceErrorKind};
use crate::config::CollectorConfig;
use crate::expand::expand_query;
use crate::http::Deadline;
use crate::redis_client::{Failure, RedisServer};

/// The commands accepted, with their least and most numbers of arguments. All read-only and
/// O(1) or O(log n) except `ZCOUNT` (O(log n)) and `PFCOUNT` over several keys: nothing here
/// can stall a server or change data.
const ALLOWED: [(&str, usize, usize); 9] = [
    ("LLEN", 1, 1),
    ("ZCARD", 1, 1),
    ("ZCOUNT", 3, 3),
    ("SCARD", 1, 1),
    ("HLEN", 1, 1),
    ("XLEN", 1, 1),
    ("GET", 1, 1),
    ("PFCOUNT", 1, 16),
    ("DBSIZE", 0, 0),
];

/// One command of `commands`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCommand {
    name: &'static str,
    args: Vec<String>,
}

impl RedisCommand {
    /// `LLEN queue:default`: a name from the allowed list (any case) and its arguments,
    /// separated by white space. The error says what is wrong and what is accepted.
    pub fn parse(text: &str) -> Result<RedisCommand, String> {
        let mut words = text.split_whitespace();
        let Some(first) = words.next() else {
            return Err("an empty command".to_string());
        };
        let upper = first.to_ascii_uppercase();
        let Some(&(name, min, max)) = ALLOWED.iter().find(|(n, _, _)| *n == upper) else {
            return Err(format!(
                "{first:?} is not an allowed command; only read-only counting commands are: {}",
                allowed_list()
            ));
        };
        let args: Vec<String> = words.map(str::to_string).collect();
        if args.len() < min || args.len() > max {
            let wanted = match (min, max) {
                (0, 0) => "no arguments".to_string(),
                (1, 1) => "one key".to_string(),
                (3, 3) => "a key, a min and a max".to_string(),
                (min, max) => format!("{min} to {max} keys"),
            };
            return Err(format!("{name} takes {wanted}, got {}", args.len()));
        }
        Ok(RedisCommand { name, args })
    }

    /// The command as sent for `app`, for messages.
    fn shown(&self, args: &[String]) -> String {
        std::iter::once(self.name)
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn allowed_list() -> String {
    ALLOWED
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct RedisCollector {
    metric: String,
    server: RedisServer,
    commands: Vec<RedisCommand>,
}

impl RedisCollector {
    pub fn new(c: &CollectorConfig) -> Result<RedisCollector, String> {
        let commands = c
            .commands
            .iter()
            .map(|text| RedisCommand::parse(text))
            .collect::<Result<_, _>>()?;
        Ok(RedisCollector {
            metric: c.metric_name.clone(),
            server: RedisServer::new(&c.url, &c.ca_data)?,
            commands,
        })
    }

    fn source(&self) -> String {
        format!("redis {}", self.server.shown())
    }
}

impl Collector for RedisCollector {
    fn metric_name(&self) -> &str {
        &self.metric
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError> {
        let started = Instant::now();
        let mut total = 0.0;
        for command in &self.commands {
            let args: Vec<String> = command.args.iter().map(|a| expand_query(a, app)).collect();
            let value = self
                .server
                .with_connection(deadline, |conn| {
                    redis::cmd(command.name).arg(&args).query::<Value>(conn)
                })
                .map_err(|f| match f {
                    Failure::Reply(m) => Failure::Reply(format!("{}: {m}", command.shown(&args))),
                    other => other,
                })
                .map_err(|f| f.into_source(self.source(), started))?;
            total += number(&value).map_err(|m| SourceError {
                source: self.source(),
                kind: SourceErrorKind::Answer(format!("{} {m}", command.shown(&args))),
                hint: String::new(),
            })?;
        }
        Ok(total)
    }
}

/// A reply as a number: an integer, a bulk string holding a number, or nil (a `GET` of a
/// key that does not exist: nothing queued yet).
fn number(value: &Value) -> Result<f64, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("returned {:?}, not a number", crate::grpc::one_line(s, 60)))
    };
    match value {
        Value::Int(n) => Ok(*n as f64),
        Value::Nil => Ok(0.0),
        Value::Double(f) => Ok(*f),
        Value::BulkString(bytes) => parse(&String::from_utf8_lossy(bytes)),
        Value::SimpleString(s) => parse(s),
        Value::Array(_) | Value::Set(_) => Err("returned a list, not a number".to_string()),
        Value::Map(_) => Err("returned a map, not a number".to_string()),
        _ => Err("returned a reply that is not a number".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counting_commands_with_their_arities() {
        let llen = RedisCommand::parse("llen  queue:$APP_NAME").unwrap();
        assert_eq!(llen.name, "LLEN");
        assert_eq!(llen.args, ["queue:$APP_NAME"]);
        assert!(RedisCommand::parse("ZCOUNT q -inf +inf").is_ok());
        assert!(RedisCommand::parse("PFCOUNT a b c").is_ok());
        assert!(RedisCommand::parse("DBSIZE").is_ok());
        let del = RedisCommand::parse("DEL queue").unwrap_err();
        assert!(
            del.starts_with("\"DEL\" is not an allowed command") && del.contains("LLEN, ZCARD"),
            "{del}"
        );
        assert_eq!(
            RedisCommand::parse("LLEN a b").unwrap_err(),
            "LLEN takes one key, got 2"
        );
        assert_eq!(
            RedisCommand::parse("ZCOUNT q 0").unwrap_err(),
            "ZCOUNT takes a key, a min and a max, got 2"
        );
        assert!(RedisCommand::parse("DBSIZE 0").is_err());
        assert!(RedisCommand::parse("  ").is_err());
        assert!(RedisCommand::parse("EVAL \"return 1\" 0").is_err());
    }

    #[test]
    fn replies_as_numbers() {
        assert_eq!(number(&Value::Int(7)), Ok(7.0));
        assert_eq!(number(&Value::Nil), Ok(0.0));
        assert_eq!(number(&Value::BulkString(b" 12.5".to_vec())), Ok(12.5));
        assert_eq!(
            number(&Value::BulkString(b"abc\n".to_vec())),
            Err("returned \"abc\", not a number".to_string())
        );
        assert!(number(&Value::Array(vec![])).unwrap_err().contains("list"));
    }
}
