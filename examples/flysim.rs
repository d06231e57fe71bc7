//! Runs the Fly Machines API simulator standalone, e.g. to point the autoscaler at it:
//!
//! ```text
//! cargo run --example flysim -- --port 4280 --org my-org --app my-app --machines 4 \
//!     [--state stopped] [--latency-ms 0] [--token 'FlyV1 fm2_x']
//! FLY_FLAPS_BASE_URL=http://127.0.0.1:4280 ...
//! ```
//!
//! Prints one line when listening, then (every second) a one-line summary of each app's
//! machines by state whenever it changes. Runs until killed.

#[allow(dead_code)]
#[path = "../tests/support/simulator.rs"]
mod simulator;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use simulator::{MachineSpec, Simulator};

const USAGE: &str = "\
usage: flysim [options]

  --port N           port to listen on (default 4280; 0 = any free port)
  --bind ADDR        address to bind (default 127.0.0.1)
  --org SLUG         organisation slug of the apps (default personal)
  --app NAME         app to create; repeat for several apps (default my-app)
  --machines N       machines to seed in each app (default 1)
  --state STATE      state of the seeded machines (default started)
  --region REGION    region of the seeded machines (default iad)
  --group NAME       process group of the seeded machines (default app)
  --image REF        image of the seeded machines (default: a digest-pinned fixture image)
  --latency-ms N     latency added to every request (default 0)
  --token VALUE      required Authorization header value, e.g. 'FlyV1 fm2_x' (default: none)
  --release STATUS   GraphQL current release status of every app (default complete; 'null' = none)
  --skip-launch-state STATE
                     state of machines created with skip_launch (stopped or created; default stopped)
  --rate-limit       enable the per-action token-bucket rate limits
  -h, --help         show this help
";

struct Args {
    port: u16,
    bind: String,
    org: String,
    apps: Vec<String>,
    machines: usize,
    state: String,
    region: String,
    group: String,
    image: Option<String>,
    latency_ms: u64,
    token: Option<String>,
    release: Option<String>,
    skip_launch_state: Option<String>,
    rate_limit: bool,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        port: 4280,
        bind: "127.0.0.1".to_string(),
        org: "personal".to_string(),
        apps: Vec::new(),
        machines: 1,
        state: "started".to_string(),
        region: "iad".to_string(),
        group: "app".to_string(),
        image: None,
        latency_ms: 0,
        token: None,
        release: Some("complete".to_string()),
        skip_launch_state: None,
        rate_limit: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("port") => args.port = parser.value()?.parse()?,
            Long("bind") => args.bind = parser.value()?.string()?,
            Long("org") => args.org = parser.value()?.string()?,
            Long("app") => args.apps.push(parser.value()?.string()?),
            Long("machines") => args.machines = parser.value()?.parse()?,
            Long("state") => args.state = parser.value()?.string()?,
            Long("region") => args.region = parser.value()?.string()?,
            Long("group") => args.group = parser.value()?.string()?,
            Long("image") => args.image = Some(parser.value()?.string()?),
            Long("latency-ms") => args.latency_ms = parser.value()?.parse()?,
            Long("token") => args.token = Some(parser.value()?.string()?),
            Long("release") => {
                let v = parser.value()?.string()?;
                args.release = if v == "null" { None } else { Some(v) };
            }
            Long("skip-launch-state") => args.skip_launch_state = Some(parser.value()?.string()?),
            Long("rate-limit") => args.rate_limit = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if args.apps.is_empty() {
        args.apps.push("my-app".to_string());
    }
    Ok(Some(args))
}

fn summary(sim: &Simulator, apps: &[String]) -> String {
    apps.iter()
        .map(|app| {
            let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
            for m in sim.machines(app) {
                *by_state.entry(m.state).or_default() += 1;
            }
            let states = if by_state.is_empty() {
                "no machines".to_string()
            } else {
                by_state
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("{app}: {states}")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flysim: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::start_on(&format!("{}:{}", args.bind, args.port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flysim: cannot listen on {}:{}: {e}", args.bind, args.port);
            return ExitCode::FAILURE;
        }
    };
    sim.set_token(args.token.as_deref());
    sim.set_latency(Duration::from_millis(args.latency_ms));
    sim.set_rate_limit(args.rate_limit);
    if let Some(s) = &args.skip_launch_state {
        sim.set_skip_launch_state(s);
    }
    for app in &args.apps {
        sim.add_app(&args.org, app);
        sim.set_release_status(app, args.release.as_deref());
        for _ in 0..args.machines {
            let mut spec = MachineSpec::new(&args.state)
                .region(&args.region)
                .group(Some(&args.group));
            if let Some(image) = &args.image {
                spec = spec.image(image);
            }
            sim.add_machine(app, spec);
        }
    }
    let apps_desc = args
        .apps
        .iter()
        .map(|a| format!("app {a}: {} machines", args.machines))
        .collect::<Vec<_>>()
        .join(", ");
    println!("flysim listening on {} ({apps_desc})", sim.url());

    let mut last = String::new();
    loop {
        let now = summary(&sim, &args.apps);
        if now != last {
            println!("{now}");
            last = now;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
