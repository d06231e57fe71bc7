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

enum Command {
    Eval {
        config: Option<PathBuf>,
    },
    Serve {
        config: Option<PathBuf>,
        once: bool,
        dry_run: bool,
    },
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
