//! Serves the Fly Machines API simulator on its own, e.g. to point the autoscaler at it:
//!
//! ```text
//! cargo run -p flysim -- --port 4280 --app my-app --machines 4 --state stopped
//! FLY_FLAPS_BASE_URL=http://127.0.0.1:4280 FLY_API_BASE_URL=http://127.0.0.1:4280 fly-autoscaler serve …
//! ```
//!
//! Prints one line when listening, then a one-line summary of each app's machines by state
//! whenever it changes. Runs until killed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use flysim::{MachineSpec, Simulator};

const USAGE: &str = "\
usage: flysim [options]

  --port N            port to listen on (default 4280; 0 = any free port)
  --bind ADDR         address to bind (default 127.0.0.1)
  --org SLUG          organisation of the apps (default personal)
  --app NAME          app to create; repeat for several apps (default my-app)
  --machines N        machines to seed in each app (default 1)
  --state STATE       state of the seeded machines (default started)
  --region REGION     region of the seeded machines (default iad)
  --group NAME        process group of the seeded machines (default app)
  --image REF         image of the seeded machines (default: a digest-pinned fixture image)
  --latency-ms N      latency added to every request (default 0)
  --transition-ms N   how long machines stay starting, stopping, … (default 0)
  --token VALUE       required Authorization header, e.g. 'FlyV1 fm2_x' (default: none)
  --release STATUS    current release status of every app (default complete; 'null' = none)
  -h, --help          show this help
";

struct Args {
    addr: (String, u16),
    org: String,
    apps: Vec<String>,
    machines: usize,
    spec: MachineSpec,
    latency: Duration,
    transition: Duration,
    token: Option<String>,
    release: Option<String>,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        addr: ("127.0.0.1".to_string(), 4280),
        org: "personal".to_string(),
        apps: Vec::new(),
        machines: 1,
        spec: MachineSpec::new("started"),
        latency: Duration::ZERO,
        transition: Duration::ZERO,
        token: None,
        release: Some("complete".to_string()),
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("port") => args.addr.1 = parser.value()?.parse()?,
            Long("bind") => args.addr.0 = parser.value()?.string()?,
            Long("org") => args.org = parser.value()?.string()?,
            Long("app") => args.apps.push(parser.value()?.string()?),
            Long("machines") => args.machines = parser.value()?.parse()?,
            Long("state") => args.spec.state = parser.value()?.string()?,
            Long("region") => args.spec.region = parser.value()?.string()?,
            Long("group") => args.spec.process_group = Some(parser.value()?.string()?),
            Long("image") => args.spec.image = parser.value()?.string()?,
            Long("latency-ms") => args.latency = Duration::from_millis(parser.value()?.parse()?),
            Long("transition-ms") => {
                args.transition = Duration::from_millis(parser.value()?.parse()?);
            }
            Long("token") => args.token = Some(parser.value()?.string()?),
            Long("release") => {
                let v = parser.value()?.string()?;
                args.release = (v != "null").then_some(v);
            }
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

/// `app: 3 started, 1 stopped | other: no machines`
fn summary(sim: &Simulator, apps: &[String]) -> String {
    let per_app: Vec<String> = apps
        .iter()
        .map(|app| {
            let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
            for m in sim.machines(app) {
                *by_state.entry(m.state).or_default() += 1;
            }
            let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
            if states.is_empty() {
                format!("{app}: no machines")
            } else {
                format!("{app}: {}", states.join(", "))
            }
        })
        .collect();
    per_app.join(" | ")
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
    let (bind, port) = &args.addr;
    let sim = match Simulator::start_on(&format!("{bind}:{port}")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flysim: cannot listen on {bind}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    sim.set_token(args.token.as_deref());
    sim.set_latency(args.latency);
    sim.set_transition_time(args.transition);
    for app in &args.apps {
        sim.add_app(&args.org, app);
        sim.set_release_status(app, args.release.as_deref());
        for _ in 0..args.machines {
            sim.add_machine(app, args.spec.clone());
        }
    }
    println!(
        "flysim listening on {} (org {}, {} machines in each of {})",
        sim.url(),
        args.org,
        args.machines,
        args.apps.join(", ")
    );
    let mut last = String::new();
    loop {
        let now = summary(&sim, &args.apps);
        if now != last {
            println!("{now}");
            last = now;
        }
        // A status display, not a wait: it runs until killed.
        std::thread::sleep(Duration::from_secs(1));
    }
}
