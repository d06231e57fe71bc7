//! Log output on stderr: text lines (default) or JSON lines shaped like the Go program's
//! (`level`, `msg`, then the attributes). `verbose` selects debug; `RUST_LOG` still works.
//!
//! Every record is one line whatever it holds: error texts from APIs and metric sources are
//! outside text, and a newline in one must not forge a log line. Text lines escape control
//! characters (`\n`, `\u{1b}`); JSON escapes them by itself. Panics are reported here too,
//! as one record in the chosen format.

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::panic::{AssertUnwindSafe, PanicHookInfo};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Record};

use crate::config::LogFormat;

/// Installs the logger once; later calls do nothing.
pub fn init(format: LogFormat, verbose: bool) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let ours = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(LevelFilter::Warn)
        .filter_module("fly_autoscaler", ours)
        .target(env_logger::Target::Stderr);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |buf, record| {
        // ureq-proto dumps raw request bytes, Authorization header included, at trace level:
        // never let that through, whatever RUST_LOG says.
        if record.level() == Level::Trace && record.target().starts_with("ureq") {
            return Ok(());
        }
        let line = if json {
            json_line(record)
        } else {
            text_line(record)
        };
        writeln!(buf, "{line}")
    });
    let _ = builder.try_init();
}

fn text_line(record: &Record) -> String {
    let mut line = format!(
        "{} {:<5} ",
        crate::clock::rfc3339(crate::clock::now()),
        record.level()
    );
    push_escaped(&mut line, &record.args().to_string());
    let mut kv = TextKv(&mut line);
    let _ = record.key_values().visit(&mut kv);
    line
}

/// Appends `s` with control characters escaped, so it stays on one line.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `s` on one line, for `ERROR:` lines outside the logger: runs of white space (a YAML
/// error's line breaks) become one space, other control characters are escaped.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(
        &mut out,
        &s.split_whitespace().collect::<Vec<_>>().join(" "),
    );
    out
}

fn json_line(record: &Record) -> String {
    let level = match record.level() {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug | Level::Trace => "DEBUG",
    };
    // Built by hand to keep the Go key order: level, msg, then the attributes.
    let mut line = format!(
        "{{\"level\":\"{level}\",\"msg\":{}",
        serde_json::Value::from(record.args().to_string())
    );
    let mut attrs = JsonKv(Vec::new());
    let _ = record.key_values().visit(&mut attrs);
    for (key, node) in &attrs.0 {
        line.push(',');
        node.render(key, &mut line);
    }
    line.push('}');
    line
}

/// An attribute of a JSON line: a dotted key (`target.created.min`) is a group, rendered as
/// nested objects like slog's groups.
enum Node {
    Leaf(serde_json::Value),
    Group(Vec<(String, Node)>),
}

impl Node {
    fn insert(tree: &mut Vec<(String, Node)>, path: &str, value: serde_json::Value) {
        let Some((first, rest)) = path.split_once('.') else {
            tree.push((path.to_string(), Node::Leaf(value)));
            return;
        };
        match tree
            .iter_mut()
            .find(|(k, n)| k == first && matches!(n, Node::Group(_)))
        {
            Some((_, Node::Group(children))) => Node::insert(children, rest, value),
            _ => {
                let mut children = Vec::new();
                Node::insert(&mut children, rest, value);
                tree.push((first.to_string(), Node::Group(children)));
            }
        }
    }

    fn render(&self, key: &str, out: &mut String) {
        out.push_str(&serde_json::Value::from(key).to_string());
        out.push(':');
        match self {
            Node::Leaf(v) => out.push_str(&v.to_string()),
            Node::Group(children) => {
                out.push('{');
                for (i, (k, n)) in children.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    n.render(k, out);
                }
                out.push('}');
            }
        }
    }
}

struct TextKv<'a>(&'a mut String);

/// Whether a value is `None` (an attribute that only some records have, such as
/// `process_group`): such attributes are left out.
fn is_null(value: &Value) -> bool {
    struct Null(bool);
    impl<'v> log::kv::VisitValue<'v> for Null {
        fn visit_any(&mut self, _: Value) -> Result<(), log::kv::Error> {
            Ok(())
        }
        fn visit_null(&mut self) -> Result<(), log::kv::Error> {
            self.0 = true;
            Ok(())
        }
    }
    let mut null = Null(false);
    let _ = value.visit(&mut null);
    null.0
}

impl<'kvs> VisitSource<'kvs> for TextKv<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        if is_null(&value) {
            return Ok(());
        }
        let v = value.to_string();
        if v.is_empty() || v.contains([' ', '"', '=']) || v.contains(char::is_control) {
            // Debug quoting escapes control characters too.
            let _ = write!(self.0, " {key}={v:?}");
        } else {
            let _ = write!(self.0, " {key}={v}");
        }
        Ok(())
    }
}

struct JsonKv(Vec<(String, Node)>);

impl<'kvs> VisitSource<'kvs> for JsonKv {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        if is_null(&value) {
            return Ok(());
        }
        let json: serde_json::Value = if let Some(b) = value.to_bool() {
            b.into()
        } else if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(f) = value.to_f64().and_then(serde_json::Number::from_f64) {
            f.into()
        } else {
            value.to_string().into()
        };
        Node::insert(&mut self.0, key.as_str(), json);
        Ok(())
    }
}

thread_local! {
    /// Set while [`catch_panic`] runs: the hook leaves the panic's text here instead of
    /// printing it, and the catcher reports it with its context.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Reports panics as one record: through the logger once it is installed, else as an
/// `ERROR:` line on stderr; inside [`catch_panic`] they are left to the catcher.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = describe_panic(info);
        let caught = CAUGHT.with(|c| {
            let mut c = c.borrow_mut();
            c.as_mut().map(|slot| *slot = text.clone()).is_some()
        });
        if caught {
            return;
        }
        if log::max_level() == LevelFilter::Off {
            eprintln!("ERROR: internal error: {}", one_line(&text));
        } else {
            log::error!("internal error: {text}");
        }
    }));
}

/// Runs `f`; a panic comes back as its text (message and location) instead of unwinding.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CAUGHT.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    let text = CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    result.map_err(|payload| {
        if text.is_empty() {
            payload_text(&*payload)
        } else {
            text
        }
    })
}

fn describe_panic(info: &PanicHookInfo) -> String {
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    format!("{}{at}", payload_text(info.payload()))
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_look_like_the_go_program() {
        let record = Record::builder()
            .args(format_args!("machine started"))
            .level(Level::Info)
            .key_values(&[("app", "my-app"), ("id", "148e")])
            .build();
        assert_eq!(
            json_line(&record),
            r#"{"level":"INFO","msg":"machine started","app":"my-app","id":"148e"}"#
        );
    }

    #[test]
    fn dotted_keys_are_groups_in_json() {
        let kvs: &[(&str, &dyn log::kv::ToValue)] = &[
            ("app", &"a"),
            ("current.started", &1u64),
            ("current.stopped", &2u64),
            ("target.created.min", &1u64),
            ("target.created.max", &3u64),
            ("target.started.min", &0u64),
        ];
        let record = Record::builder()
            .args(format_args!("reconciling"))
            .level(Level::Info)
            .key_values(&kvs)
            .build();
        assert_eq!(
            json_line(&record),
            r#"{"level":"INFO","msg":"reconciling","app":"a","current":{"started":1,"stopped":2},"target":{"created":{"min":1,"max":3},"started":{"min":0}}}"#
        );
        assert!(text_line(&record).ends_with(
            "reconciling app=a current.started=1 current.stopped=2 target.created.min=1 target.created.max=3 target.started.min=0"
        ));
    }

    #[test]
    fn absent_attributes_are_left_out() {
        let none: Option<&str> = None;
        let kvs: &[(&str, &dyn log::kv::ToValue)] =
            &[("app", &"a"), ("process_group", &none), ("n", &1u64)];
        let record = Record::builder()
            .args(format_args!("bulk start completed"))
            .level(Level::Info)
            .key_values(&kvs)
            .build();
        assert!(text_line(&record).ends_with("bulk start completed app=a n=1"));
        assert_eq!(
            json_line(&record),
            r#"{"level":"INFO","msg":"bulk start completed","app":"a","n":1}"#
        );
    }

    #[test]
    fn text_lines_quote_values_with_spaces() {
        let kvs: &[(&str, &dyn log::kv::ToValue)] =
            &[("app", &"a"), ("plan", &"start 2 of [1, 2]"), ("ok", &2u64)];
        let record = Record::builder()
            .args(format_args!("reconciled"))
            .level(Level::Info)
            .key_values(&kvs)
            .build();
        let line = text_line(&record);
        assert!(
            line.ends_with(" INFO  reconciled app=a plan=\"start 2 of [1, 2]\" ok=2"),
            "{line}"
        );
    }

    // Issue 9, defect 7: outside text cannot forge a log line.
    #[test]
    fn text_lines_stay_one_line() {
        let kvs: &[(&str, &dyn log::kv::ToValue)] = &[("err", &"a\nINFO forged")];
        let outside = "500\r\nERROR fake \u{1b}[31m";
        let render = |f: fn(&Record) -> String| {
            f(&Record::builder()
                .args(format_args!("failed: {outside}"))
                .level(Level::Error)
                .key_values(&kvs)
                .build())
        };
        let line = render(text_line);
        assert!(!line.contains(['\n', '\r', '\u{1b}']), "{line}");
        assert!(
            line.contains("failed: 500\\r\\nERROR fake \\u{1b}[31m"),
            "{line}"
        );
        assert!(line.ends_with(" err=\"a\\nINFO forged\""), "{line}");
        let json = render(json_line);
        assert!(!json.contains('\n'));
        assert_eq!(one_line("a\n  b\u{7}"), "a b\\u{7}");
    }

    #[test]
    fn caught_panics_come_back_as_text() {
        install_panic_hook();
        let err = catch_panic(|| -> u8 { panic!("boom {}", 42) }).unwrap_err();
        assert!(err.starts_with("boom 42 at src/logging.rs:"), "{err}");
        assert_eq!(catch_panic(|| 7), Ok(7));
    }
}
