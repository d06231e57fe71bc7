//! Command line: parses arguments, runs the command, reports errors on one line and sets the
//! exit status (0 success, 1 runtime failure, 2 usage error).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
fly-autoscaler is a metrics-based autoscaler for Fly Machines. It collects
metrics, evaluates your expressions into target machine counts, and creates,
destroys, starts or stops machines until each app matches them.

Usage:

\tfly-autoscaler <command> [arguments]

The commands are:

\teval        collects metrics once and evaluates the target machine counts
\tserve       runs the autoscaler server process
\tbacktest    replays metric history through the config and reports what it would have done
\tversion     prints the version
\thelp        prints this help

Run 'fly-autoscaler <command> -help' for the arguments of a command.
";

const EVAL_USAGE: &str = "\
Usage: fly-autoscaler eval [arguments]

Collects every metric once and prints the target machine counts the
expressions give, as JSON. Nothing is scaled; use it to try metrics and
expressions. Configuration comes from FAS_* variables and the config file.

Arguments:
  -config PATH   YAML config file, read after the FAS_* environment variables
  -help          show this help
";

const SERVE_USAGE: &str = "\
Usage: fly-autoscaler serve [arguments]

Runs the autoscaler: every interval it reconciles each app, creating,
destroying, starting and stopping machines to match the targets. SIGINT or
SIGTERM lets running reconciles finish, then exits 0.

Arguments:
  -config PATH   YAML config file, read after the FAS_* environment variables
  -once          reconcile every app once and exit: 0 if all succeeded, 1 if not
  -dry-run       plan and log every decision, but change no machine
  -help          show this help
";

const BACKTEST_USAGE: &str = "\
Usage: fly-autoscaler backtest [arguments]

Replays an app's metric history (Prometheus range queries) through the
expressions, the scale controls and the planner, and reports what the config
would have done next to the baseline: the same run with every scale control
off, as the Go program scales. The fleet is simulated: every action is
assumed done within its step. Nothing is scaled and no API token is needed.

Arguments:
  -config PATH      YAML config file, read after the FAS_* environment variables
  -app NAME         the app for $APP_NAME (required when app-name is a pattern)
  -from TIME        start: RFC 3339, a Unix timestamp, now, or -24h (default -24h)
  -to TIME          end (default now)
  -step DURATION    time between steps (default: interval)
  -machines N       machines at the start (default: the lowest created bound, or 1)
  -started N        started machines at the start (default 0)
  -set NAME=VALUE   a constant for a metric (required for sources without history)
  -format FORMAT    text, json or csv (default text)
  -html PATH        also write a self-contained HTML report with charts
  -help             show this help
";

enum Command {
    Eval {
        config: Option<PathBuf>,
    },
    Serve {
        config: Option<PathBuf>,
        once: bool,
        dry_run: bool,
    },
    Backtest(fly_autoscaler::BacktestOptions),
    Version,
    Help(&'static str),
}

fn main() -> ExitCode {
    fly_autoscaler::install_panic_hook();
    let args: Vec<OsString> = std::env::args_os().skip(1).map(go_style_flag).collect();
    let command = match parse(args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("ERROR: {}", fly_autoscaler::one_line(&msg));
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help(text) => {
            print!("{text}");
            Ok(true)
        }
        Command::Version => {
            println!("{}", fly_autoscaler::version_line());
            Ok(true)
        }
        Command::Eval { config } => fly_autoscaler::eval(config.as_deref()).map(|()| true),
        Command::Backtest(opts) => fly_autoscaler::backtest(&opts).map(|()| true),
        Command::Serve {
            config,
            once,
            dry_run,
        } => fly_autoscaler::serve(&fly_autoscaler::ServeOptions {
            config: config.as_deref(),
            once,
            dry_run,
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("ERROR: {}", fly_autoscaler::one_line(&msg));
            ExitCode::from(1)
        }
    }
}

/// Go's flag package takes `-config` as well as `--config`; lexopt reads `-config` as short
/// flags, so single-dash long flags get a second dash.
fn go_style_flag(arg: OsString) -> OsString {
    match arg.to_str() {
        Some(s) if s.len() > 2 && s.starts_with('-') && s.as_bytes()[1].is_ascii_alphabetic() => {
            OsString::from(format!("-{s}"))
        }
        _ => arg,
    }
}

fn parse(args: Vec<OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let name = match parser.next().map_err(|e| e.to_string())? {
        None => {
            return Err("no command given; run 'fly-autoscaler help' to see the commands".into());
        }
        Some(Value(v)) => v.string().map_err(|e| e.to_string())?,
        Some(Short('h') | Long("help")) => return Ok(Command::Help(USAGE)),
        Some(other) => {
            return Err(format!(
                "{} before the command; run 'fly-autoscaler help'",
                other.unexpected()
            ));
        }
    };
    let (usage, is_serve) = match name.as_str() {
        "help" => return Ok(Command::Help(USAGE)),
        // The Go program ignored anything after `version`.
        "version" => return Ok(Command::Version),
        "eval" => (EVAL_USAGE, false),
        "serve" => (SERVE_USAGE, true),
        "backtest" => return parse_backtest(parser),
        other => {
            return Err(format!(
                "fly-autoscaler {other}: unknown command; run 'fly-autoscaler help' to see the commands"
            ));
        }
    };
    let mut config = None;
    let mut once = false;
    let mut dry_run = false;
    while let Some(arg) = parser.next().map_err(|e| format!("{name}: {e}"))? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(usage)),
            Long("config") => {
                let value = parser.value().map_err(|_| {
                    format!("{name}: -config needs a file path, e.g. -config fly-autoscaler.yml")
                })?;
                config = Some(PathBuf::from(value));
            }
            Long("once") if is_serve => once = true,
            Long("dry-run") if is_serve => dry_run = true,
            other => {
                return Err(format!(
                    "{name}: {}; run 'fly-autoscaler {name} -help' to see the arguments",
                    other.unexpected()
                ));
            }
        }
    }
    Ok(if is_serve {
        Command::Serve {
            config,
            once,
            dry_run,
        }
    } else {
        Command::Eval { config }
    })
}

fn parse_backtest(mut parser: lexopt::Parser) -> Result<Command, String> {
    use fly_autoscaler::{BacktestFormat, TimeArg, parse_set};
    use lexopt::prelude::*;
    let mut opts = fly_autoscaler::BacktestOptions::default();
    let bad = |flag: &str, e: String| format!("backtest: -{flag}: {e}");
    while let Some(arg) = parser.next().map_err(|e| format!("backtest: {e}"))? {
        let flag = match arg {
            Short('h') | Long("help") => return Ok(Command::Help(BACKTEST_USAGE)),
            Long(flag) => flag.to_string(),
            other => {
                return Err(format!(
                    "backtest: {}; run 'fly-autoscaler backtest -help' to see the arguments",
                    other.unexpected()
                ));
            }
        };
        let value = |parser: &mut lexopt::Parser| -> Result<String, String> {
            parser
                .value()
                .map_err(|_| format!("backtest: -{flag} needs a value"))?
                .string()
                .map_err(|_| format!("backtest: -{flag}: the value is not UTF-8"))
        };
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| bad(&flag, format!("{v:?} is not a whole number")))
        };
        match flag.as_str() {
            "config" => opts.config = Some(PathBuf::from(value(&mut parser)?)),
            "app" => opts.app = Some(value(&mut parser)?),
            "from" => {
                opts.from = TimeArg::parse(&value(&mut parser)?).map_err(|e| bad(&flag, e))?
            }
            "to" => opts.to = TimeArg::parse(&value(&mut parser)?).map_err(|e| bad(&flag, e))?,
            "step" => {
                let v = value(&mut parser)?;
                opts.step = Some(fly_autoscaler::parse_step(&v).map_err(|e| bad(&flag, e))?);
            }
            "machines" => opts.machines = Some(number(value(&mut parser)?)?),
            "started" => opts.started = Some(number(value(&mut parser)?)?),
            "set" => opts
                .set
                .push(parse_set(&value(&mut parser)?).map_err(|e| bad(&flag, e))?),
            "format" => {
                opts.format =
                    BacktestFormat::parse(&value(&mut parser)?).map_err(|e| bad(&flag, e))?
            }
            "html" => opts.html = Some(PathBuf::from(value(&mut parser)?)),
            _ => {
                return Err(format!(
                    "backtest: unknown argument -{flag}; run 'fly-autoscaler backtest -help' to see the arguments"
                ));
            }
        }
    }
    Ok(Command::Backtest(opts))
}
