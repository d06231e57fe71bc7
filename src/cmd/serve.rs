//! `serve`: the long-running autoscaler (or, with `--once`, a single pass for cron).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::collector::PrometheusClient;
use crate::config::{CollectorKind, Config};
use crate::duration::format_go;
use crate::http;
use crate::leader::{Election, RedisLock, Round, instance_id};
use crate::logging;
use crate::machines::MachinesClient;
use crate::pool::{self, Apps, Shutdown};
use crate::reconcile::{Fly, Reconciler};
use crate::release::ReleaseClient;
use crate::telemetry::{MetricsServer, Telemetry};

#[derive(Debug, Default, Clone)]
pub struct Options<'a> {
    pub config: Option<&'a Path>,
    /// One reconcile pass, then exit.
    pub once: bool,
    /// Plan and log, change nothing.
    pub dry_run: bool,
}

/// Runs until SIGINT/SIGTERM (exit 0), or one pass with `once`; returns whether every app
/// reconciled (only meaningful with `once`).
pub fn run(opts: &Options) -> Result<bool, String> {
    let super::Prepared {
        config,
        groups,
        collectors,
    } = super::prepare(opts.config)?;
    config.validate_for_serve().map_err(|e| e.to_string())?;
    logging::init(config.log_format, config.verbose);
    let telemetry = Arc::new(Telemetry::new());
    // Before any client is made: their User-Agent carries the instance id.
    let election = election(&config, &telemetry)?;
    let shutdown = Arc::new(Shutdown::default());
    install_signal_handler(&shutdown, election.clone())?;
    log::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = option_env!("FAS_COMMIT").unwrap_or(""),
        pid = std::process::id(),
        instance = election.as_ref().map(|e| e.id());
        "fly-autoscaler"
    );

    let collector_count = collectors.len();
    let machines = MachinesClient::new(&config.flaps_base_url, &config.api_token)?;
    // The Go program's line at this point (it makes no call either).
    log::info!("connected to fly");
    log::info!(n = collector_count; "metrics collectors initialized");
    for metric in super::shadowed_time_variables(&config) {
        log::warn!(metric; "metric-name {}", super::SHADOWED);
    }
    let fly = Fly {
        machines,
        releases: config
            .deploy_guard
            .then(|| ReleaseClient::new(&config.api_base_url, &config.api_token)),
        collectors,
        prometheus: config
            .metric_collectors
            .iter()
            .find(|c| c.kind == CollectorKind::Prometheus)
            .map(PrometheusClient::new),
    };
    let mut reconciler = Reconciler::new(
        &config,
        groups,
        Box::new(fly),
        Arc::clone(&telemetry),
        opts.dry_run,
    );
    if let Some(e) = &election {
        reconciler = reconciler.fenced_by(Arc::clone(e) as Arc<dyn crate::reconcile::Fence>);
    }
    let reconciler = Arc::new(reconciler);
    let apps = Apps {
        name: config.app_name.clone(),
        org: config.org.clone(),
        refresh_interval: config.app_list_refresh_interval,
    };
    if opts.once {
        let Some(election) = election else {
            return Ok(pool::run_once(
                reconciler,
                &apps,
                config.concurrency,
                &shutdown,
            ));
        };
        return once_if_leader(&election, || {
            pool::run_once(reconciler, &apps, config.concurrency, &shutdown)
        });
    }
    let renewer = election
        .as_ref()
        .map(|e| {
            let (e, stop) = (Arc::clone(e), Arc::clone(&shutdown));
            std::thread::Builder::new()
                .name("leader".into())
                .spawn(move || e.run(&stop))
                .map_err(|e| format!("cannot start the leader election thread: {e}"))
        })
        .transpose()?;

    let server = match config.metrics_addr.as_str() {
        "" | "off" => None,
        // The scheduler beats every second, but an app-list refresh may hold it for up to
        // the timeout.
        addr => Some(MetricsServer::start(
            addr,
            Arc::clone(&telemetry),
            config.timeout + Duration::from_secs(10),
        )?),
    };
    if let Some(s) = &server {
        log::info!(addr = s.addr().to_string().as_str(); "serving metrics");
    }
    log::info!(
        app = config.app_name.as_str(),
        interval = format_go(config.interval).as_str(),
        timeout = format_go(config.timeout).as_str(),
        appListRefreshInterval = format_go(config.app_list_refresh_interval).as_str(),
        collectors = collector_count,
        concurrency = config.concurrency,
        dry_run = opts.dry_run;
        "reconciler pool initialized, beginning loop"
    );
    // In-flight reconciles are bounded by the timeout; allow a little more to log and exit.
    let grace = config.timeout + Duration::from_secs(2);
    pool::run(
        reconciler,
        &apps,
        config.concurrency,
        config.interval,
        &shutdown,
        grace,
    )?;
    if let (Some(e), Some(renewer)) = (&election, renewer) {
        let _ = renewer.join();
        // Only now that no reconcile runs: a standby may take over at once.
        e.release();
    }
    drop(server);
    log::info!("shutdown complete");
    Ok(true)
}

/// The leader election, when `leader-election-url` is set.
fn election(config: &Config, telemetry: &Arc<Telemetry>) -> Result<Option<Arc<Election>>, String> {
    if config.leader_election_url.is_empty() {
        return Ok(None);
    }
    let id = instance_id();
    http::set_instance(&id);
    let lock = RedisLock::new(
        &config.leader_election_url,
        &config.leader_key(),
        config.leader_election_ttl,
    )?;
    Ok(Some(Arc::new(Election::new(
        Box::new(lock),
        id,
        config.leader_election_ttl,
        Arc::clone(telemetry),
    ))))
}

/// `serve -once` with leader election: one pass if this instance gets the lock (renewed
/// while the pass runs, released after it), else nothing; exit 0 either way. Redis not
/// answering is an error: nobody may act, and cron should say so.
fn once_if_leader(election: &Election, pass: impl FnOnce() -> bool) -> Result<bool, String> {
    match election.round() {
        Round::Leading => {}
        Round::Standby => {
            log::info!(instance = election.id(); "another instance leads; nothing to do");
            return Ok(true);
        }
        Round::Unreachable(e) => {
            return Err(format!(
                "leader election: cannot reach redis ({e}); no instance may act"
            ));
        }
    }
    let stop = Shutdown::default();
    let ok = std::thread::scope(|s| {
        s.spawn(|| election.run(&stop));
        let ok = pass();
        stop.request();
        ok
    });
    election.release();
    Ok(ok)
}

/// SIGINT and SIGTERM both request a graceful shutdown; a second one exits at once. A real
/// handler is installed, so this also works as PID 1, where unhandled signals are ignored.
/// With leader election the first signal also closes the fence at once: no new machine
/// action starts; the lock is released once the running reconciles are done.
fn install_signal_handler(
    shutdown: &Arc<Shutdown>,
    election: Option<Arc<Election>>,
) -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let shutdown = Arc::clone(shutdown);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                if shutdown.is_requested() {
                    log::warn!(signal = name; "second signal, exiting immediately");
                    std::process::exit(1);
                }
                log::info!(signal = name; "signal received, shutting down");
                if let Some(e) = &election {
                    e.stand_down();
                }
                shutdown.request();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
