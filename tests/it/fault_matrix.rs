//! The fault matrix (issue 9): every call a `serve --once` pass makes — the machine list,
//! start, stop, destroy, create, the read-back of an unclear outcome, the deploy guard's
//! GraphQL query, the organization's app list and the Prometheus query — answering with
//! status codes, hangs, connections dropped before and after the work, malformed, empty and
//! huge bodies, HTML error pages, redirects and bad metric values. Each row states the
//! Machines API calls sent (actions and read-backs), the exit status and the `ERROR` record
//! that names what failed; every row also checks that nothing panicked and that every
//! stderr line is a whole log record. One runner; one test per call, so they run in
//! parallel.

use std::time::Duration;

use flysim::harness::PromStub;
use flysim::{FakeServer, Fault, FaultRule, Reply, Simulator};

use crate::support::{APP, assert_run, once, seed};

/// The call a row's fault is injected on. Each comes with its scene: the machines, the count
/// expression, and what a healthy pass does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum On {
    /// Stopped a and b, started count 1: healthy `list, start a`.
    List,
    /// Stopped a, b and c, started count 1: healthy `list, start a`.
    Start,
    /// Started a and b, started count 1: healthy `list, stop a`.
    Stop,
    /// Stopped a and started b, created count 1: healthy `list, destroy a`.
    Destroy,
    /// Started a, created count 2: healthy `list, create`.
    Create,
    /// As `Start`, with every start of a refused by 412, so a is read back.
    ReadBack,
    /// Stopped a, started count 1: healthy `list, start a`.
    Graphql,
    /// As `Graphql`, the app found through the pattern `my-*`.
    OrgApps,
    /// Stopped a and started b, started count = the metric, 1 when healthy: no action.
    Metric,
}

impl On {
    fn machines(self) -> &'static [&'static str] {
        match self {
            On::List => &["stopped", "stopped"],
            On::Start | On::ReadBack => &["stopped", "stopped", "stopped"],
            On::Stop => &["started", "started"],
            On::Destroy | On::Metric => &["stopped", "started"],
            On::Create => &["started"],
            On::Graphql | On::OrgApps => &["stopped"],
        }
    }

    fn env(self) -> Vec<(&'static str, &'static str)> {
        let mut env = vec![("FAS_ACTION_CONCURRENCY", "1")];
        env.push(match self {
            On::Destroy => ("FAS_CREATED_MACHINE_COUNT", "1"),
            On::Create => ("FAS_CREATED_MACHINE_COUNT", "2"),
            On::Metric => ("FAS_STARTED_MACHINE_COUNT", "q"),
            _ => ("FAS_STARTED_MACHINE_COUNT", "1"),
        });
        if self == On::OrgApps {
            env.extend([("FAS_APP_NAME", "my-*"), ("FAS_ORG", "my-org")]);
        }
        env
    }

    /// The method and target substring of the faulted call; `a` is the first machine's id.
    fn target(self, a: &str) -> (&'static str, String) {
        match self {
            On::List => ("GET", format!("/{APP}/machines?")),
            On::Start => ("POST", format!("{a}/start")),
            On::Stop => ("POST", format!("{a}/stop")),
            On::Destroy => ("DELETE", format!("machines/{a}?")),
            On::Create => ("POST", format!("/{APP}/machines?")),
            On::ReadBack => ("GET", format!("machines/{a}?")),
            On::Graphql => ("POST", "/graphql".to_string()),
            On::OrgApps => ("GET", "/v1/apps?org_slug".to_string()),
            On::Metric => unreachable!("the metric source is a scripted server"),
        }
    }
}

/// What goes wrong in a row.
enum Failure {
    /// A simulator fault on the row's call, every time it is made (or `times`).
    Api(Fault, usize),
    /// The Prometheus stand-in's answer to every query.
    Prometheus(Reply),
}

struct Row {
    on: On,
    failure: Failure,
    /// In `support::actions`' words.
    calls: &'static str,
    code: i32,
    /// A substring of an `ERROR` record (`{a}` stands for the first machine's id); `None`:
    /// no `ERROR` record at all.
    error: Option<&'static str>,
}

/// Hangs outlast the short reconcile timeout, which leaves the calls before the hung one time
/// on a loaded machine; every other row has the long one, in which five attempts with backoff
/// and the simulator's 20,001-machine list fit easily.
const SHORT_TIMEOUT: &str = "3s";
const LONG_TIMEOUT: &str = "30s";
const HANG: Duration = Duration::from_secs(30);

/// A fault on every call of its kind.
fn api(on: On, fault: Fault, calls: &'static str, code: i32, error: Option<&'static str>) -> Row {
    api_times(on, fault, 100, calls, code, error)
}

/// A fault on the first call of its kind only; the call then works.
fn api_once(
    on: On,
    fault: Fault,
    calls: &'static str,
    code: i32,
    error: Option<&'static str>,
) -> Row {
    api_times(on, fault, 1, calls, code, error)
}

fn api_times(
    on: On,
    fault: Fault,
    times: usize,
    calls: &'static str,
    code: i32,
    error: Option<&'static str>,
) -> Row {
    Row {
        on,
        failure: Failure::Api(fault, times),
        calls,
        code,
        error,
    }
}

fn metric(reply: Reply, calls: &'static str, code: i32, error: Option<&'static str>) -> Row {
    Row {
        on: On::Metric,
        failure: Failure::Prometheus(reply),
        calls,
        code,
        error,
    }
}

fn status(code: u16, body: &str) -> Fault {
    Fault::status(code, body)
}

fn error_body(code: u16) -> Fault {
    let message = match code {
        400 => "invalid_argument: bad request",
        401 => "unauthorized",
        403 => "permission_denied: forbidden",
        404 => "machine not found",
        408 => "request timeout",
        409 => "aborted: conflict",
        412 => "failed_precondition: lease held",
        422 => "invalid_argument: unprocessable",
        500 => "server error",
        502 => "bad gateway",
        503 => "service unavailable",
        _ => "error",
    };
    status(code, &format!(r#"{{"error":"{message}"}}"#))
}

const HTML_502: &str =
    "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>";

fn html_502() -> Fault {
    status(502, HTML_502)
}

fn redirect(code: u16) -> Fault {
    Fault::Redirect {
        code,
        location: "http://elsewhere.invalid/v1/apps/my-app/machines".to_string(),
    }
}

/// A 20 MiB error body: past what a buffered answer may hold (16 MiB).
fn huge_body() -> String {
    format!(r#"{{"error":"{}"}}"#, "x".repeat(20 << 20))
}

fn prometheus_value(value: &str) -> Reply {
    Reply::json(
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{value}"]}}]}}}}"#
        ),
    )
}

/// Runs every row, each against a fresh simulator.
fn run_rows(rows: Vec<Row>) {
    for (n, row) in rows.into_iter().enumerate() {
        run_row(n, row);
    }
}

fn run_row(n: usize, row: Row) {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, row.on.machines());
    let a = ids[0].clone();
    let stub = PromStub::start(1.0);
    let mut env = row.on.env();
    let prometheus;
    let prometheus_url;
    let short = match row.failure {
        Failure::Api(fault, times) => {
            let short = matches!(fault, Fault::Hang(_));
            if row.on == On::ReadBack {
                sim.inject(FaultRule::new(
                    Some("POST"),
                    Some(&format!("{a}/start")),
                    100,
                    error_body(412),
                ));
            }
            let (method, path) = row.on.target(&a);
            eprintln!("row {n}: {:?} {method} {path}: {fault:?}", row.on);
            sim.inject(FaultRule::new(Some(method), Some(&path), times, fault));
            short
        }
        Failure::Prometheus(reply) => {
            let short = reply.delay.is_some();
            eprintln!(
                "row {n}: Prometheus answers {} {:.200}",
                reply.status, reply.body
            );
            prometheus = FakeServer::start(move |_| reply.clone());
            prometheus_url = prometheus.url();
            env.push(("FAS_PROMETHEUS_ADDRESS", prometheus_url.as_str()));
            short
        }
    };
    env.push((
        "FAS_TIMEOUT",
        if short { SHORT_TIMEOUT } else { LONG_TIMEOUT },
    ));
    let run = once(&sim, &stub, &env);
    let error = row.error.map(|e| e.replace("{a}", &a));
    assert_run(&run, &ids, row.code, row.calls, error.as_deref());
}

// One row per line: the tables read better unwrapped.
#[rustfmt::skip]
#[test]
fn faults_on_the_machine_list() {
    use On::List;
    // Nothing is listed, so nothing is done; 5xx, 429 and broken connections are retried.
    let refused = |code: u16, text: &'static str| api(List, error_body(code), "list", 1, Some(text));
    run_rows(vec![
        refused(400, "list machines of my-app: HTTP 400: invalid_argument: bad request"),
        refused(401, "list machines of my-app: HTTP 401: unauthorized"),
        refused(403, "list machines of my-app: HTTP 403: permission_denied: forbidden"),
        refused(404, "list machines of my-app: HTTP 404: machine not found"),
        refused(408, "list machines of my-app: HTTP 408: request timeout"),
        refused(409, "list machines of my-app: HTTP 409: aborted: conflict"),
        refused(412, "list machines of my-app: HTTP 412: failed_precondition: lease held"),
        refused(422, "list machines of my-app: HTTP 422: invalid_argument: unprocessable"),
        api(List, Fault::rate_limited("0"), "list*5", 1, Some("list machines of my-app: HTTP 429: rate limit exceeded")),
        api(List, error_body(500), "list*5", 1, Some("list machines of my-app: HTTP 500: server error")),
        api(List, html_502(), "list*5", 1, Some(r#"list machines of my-app: HTTP 502: \"502 Bad Gateway\""#)),
        api(List, error_body(503), "list*5", 1, Some("list machines of my-app: HTTP 503: service unavailable")),
        api_once(List, error_body(503), "list*2, start a", 0, None),
        api(List, Fault::Hang(HANG), "list", 1, Some("list machines of my-app: timed out")),
        api(List, Fault::Drop, "list*5", 1, Some("list machines of my-app: connection failed: Peer disconnected")),
        api(List, Fault::DropAfter, "list*5", 1, Some("list machines of my-app: connection failed: Peer disconnected")),
        api(List, Fault::MalformedJson, "list", 1, Some("list machines of my-app: HTTP 200 with a body that is not the expected JSON")),
        api(List, status(200, r#"{"machines":[]}"#), "list", 1, Some("list machines of my-app: HTTP 200 with a body that is not the expected JSON (invalid type: map, expected a JSON array of machines")),
        api(List, status(200, ""), "list", 1, Some("list machines of my-app: HTTP 200 with a body that is not the expected JSON (EOF while parsing")),
        api(List, Fault::HugeList(20_001), "list", 1, Some("list machines of my-app: the app has more than 20000 machines, the most this autoscaler reads; split it into several apps")),
        api(List, status(500, &huge_body()), "list", 1, Some("list machines of my-app: the answer is larger than 16 MiB, more than any valid answer; refused")),
        api(List, redirect(301), "list", 1, Some(r#"list machines of my-app: HTTP 301 redirect to \"http://elsewhere.invalid/v1/apps/my-app/machines\" not followed"#)),
        api(List, redirect(307), "list", 1, Some("list machines of my-app: HTTP 307 redirect to")),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_start() {
    use On::Start;
    // Refused: the next candidate is started instead.
    let refused = |code: u16, text: &'static str| api(Start, error_body(code), "list, start a, start b", 1, Some(text));
    // Unclear: a is read back (still stopped), then the next candidate is started.
    let unclear = |code: u16, text: &'static str| api(Start, error_body(code), "list, start a, get a, start b", 1, Some(text));
    run_rows(vec![
        refused(400, "start machine {a}: HTTP 400: invalid_argument: bad request"),
        refused(401, "start machine {a}: HTTP 401: unauthorized"),
        refused(403, "start machine {a}: HTTP 403: permission_denied: forbidden"),
        refused(404, "start machine {a}: HTTP 404: machine not found"),
        unclear(408, r#"start machine {a}: HTTP 408: request timeout" state=stopped"#),
        unclear(409, r#"start machine {a}: HTTP 409: aborted: conflict" state=stopped"#),
        unclear(412, r#"start machine {a}: HTTP 412: failed_precondition: lease held" state=stopped"#),
        refused(422, "start machine {a}: HTTP 422: invalid_argument: unprocessable"),
        api(Start, Fault::rate_limited("0"), "list, start a*5, start b", 1, Some("start machine {a}: HTTP 429: rate limit exceeded")),
        api(Start, error_body(500), "list, start a*5, get a, start b", 1, Some(r#"start machine {a}: HTTP 500: server error" state=stopped"#)),
        api(Start, html_502(), "list, start a*5, get a, start b", 1, Some(r#"start machine {a}: HTTP 502: \"502 Bad Gateway\"" state=stopped"#)),
        api(Start, error_body(503), "list, start a*5, get a, start b", 1, Some(r#"start machine {a}: HTTP 503: service unavailable" state=stopped"#)),
        // The start goes on past the deadline: its outcome is unknown, nothing replaces it.
        api(Start, Fault::Hang(HANG), "list, start a", 1, Some(r#"machine state unknown after failed start, not replacing it app=my-app id={a} err="start machine {a}: timed out""#)),
        api(Start, Fault::Drop, "list, start a*5, get a, start b", 1, Some(r#"start machine {a}: connection failed: Peer disconnected" state=stopped"#)),
        // Carried out, answer lost: the retry's 412 is read back as started.
        api_once(Start, Fault::DropAfter, "list, start a*2, get a", 0, None),
        // A 200 is a start, whatever its body says.
        api(Start, Fault::MalformedJson, "list, start a", 0, None),
        api(Start, redirect(302), "list, start a, start b", 1, Some("start machine {a}: HTTP 302 redirect to")),
        api(Start, redirect(303), "list, start a, start b", 1, Some("start machine {a}: HTTP 303 redirect to")),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_stop() {
    use On::Stop;
    run_rows(vec![
        api(Stop, error_body(400), "list, stop a, stop b", 1, Some("stop machine {a}: HTTP 400: invalid_argument: bad request")),
        api(Stop, error_body(401), "list, stop a, stop b", 1, Some("stop machine {a}: HTTP 401: unauthorized")),
        // Gone is as stopped as can be: no other machine is stopped for it.
        api(Stop, error_body(404), "list, stop a", 0, None),
        api(Stop, error_body(412), "list, stop a, get a, stop b", 1, Some(r#"stop machine {a}: HTTP 412: failed_precondition: lease held" state=started"#)),
        api(Stop, Fault::rate_limited("0"), "list, stop a*5, stop b", 1, Some("stop machine {a}: HTTP 429: rate limit exceeded")),
        api(Stop, error_body(500), "list, stop a*5, get a, stop b", 1, Some(r#"stop machine {a}: HTTP 500: server error" state=started"#)),
        api(Stop, Fault::Hang(HANG), "list, stop a", 1, Some("machine state unknown after failed stop, not replacing it")),
        // Carried out, answer lost: the retry's 412 is read back as stopped.
        api_once(Stop, Fault::DropAfter, "list, stop a*2, get a", 0, None),
        api(Stop, redirect(308), "list, stop a, stop b", 1, Some("stop machine {a}: HTTP 308 redirect to")),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_destroy() {
    use On::Destroy;
    // A failed destroy is never replaced by another machine.
    run_rows(vec![
        api(Destroy, error_body(400), "list, destroy a", 1, Some("destroy machine {a}: HTTP 400: invalid_argument: bad request")),
        api(Destroy, error_body(403), "list, destroy a", 1, Some("destroy machine {a}: HTTP 403: permission_denied: forbidden")),
        api(Destroy, error_body(404), "list, destroy a", 0, None),
        api(Destroy, error_body(409), "list, destroy a, get a", 1, Some(r#"destroy machine {a}: HTTP 409: aborted: conflict" state=stopped"#)),
        api(Destroy, error_body(412), "list, destroy a, get a", 1, Some(r#"destroy machine {a}: HTTP 412: failed_precondition: lease held" state=stopped"#)),
        api(Destroy, Fault::rate_limited("0"), "list, destroy a*5", 1, Some("destroy machine {a}: HTTP 429: rate limit exceeded")),
        api(Destroy, error_body(502), "list, destroy a*5, get a", 1, Some(r#"destroy machine {a}: HTTP 502: bad gateway" state=stopped"#)),
        api(Destroy, Fault::Drop, "list, destroy a*5, get a", 1, Some(r#"destroy machine {a}: connection failed: Peer disconnected" state=stopped"#)),
        // Carried out, answer lost: the retry's 404 says it is gone.
        api_once(Destroy, Fault::DropAfter, "list, destroy a*2", 0, None),
        api(Destroy, redirect(307), "list, destroy a", 1, Some("destroy machine {a}: HTTP 307 redirect to")),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_create() {
    use On::Create;
    // A create whose outcome is unknown is never repeated; only a 429 (not carried out) is.
    let failed = |fault: Fault, text: &'static str| api(Create, fault, "list, create", 1, Some(text));
    run_rows(vec![
        failed(error_body(400), "create machine in my-app (iad): HTTP 400: invalid_argument: bad request"),
        failed(error_body(422), "create machine in my-app (iad): HTTP 422: invalid_argument: unprocessable"),
        api(Create, Fault::rate_limited("0"), "list, create*5", 1, Some("create machine in my-app (iad): HTTP 429: rate limit exceeded")),
        failed(error_body(500), "create machine in my-app (iad): HTTP 500: server error"),
        failed(
            status(503, include_str!("../../testdata/fixtures/error-response-insufficient-capacity.json")),
            "create machine in my-app (iad): HTTP 503: could not reserve resource for machine: insufficient memory available to fulfill request (insufficient_capacity)",
        ),
        failed(Fault::Drop, "create machine in my-app (iad): connection failed: Peer disconnected"),
        failed(Fault::DropAfter, "create machine in my-app (iad): connection failed: Peer disconnected"),
        failed(Fault::MalformedJson, "create machine in my-app (iad): HTTP 200 with a body that is not the expected JSON"),
        failed(Fault::Hang(HANG), "create machine in my-app (iad): timed out"),
        failed(redirect(307), "create machine in my-app (iad): HTTP 307 redirect to"),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_the_read_back() {
    use On::ReadBack;
    // The start's 412 leaves the outcome open; when the read-back fails too, a's state is
    // unknown and no other machine is started for it.
    let unknown = |fault: Fault, calls: &'static str, read_back: &'static str| {
        api(ReadBack, fault, calls, 1, Some(read_back))
    };
    run_rows(vec![
        unknown(error_body(404), "list, start a, get a", r#"not replacing it app=my-app id={a} err="start machine {a}: HTTP 412: failed_precondition: lease held" read_back="get machine {a}: HTTP 404: machine not found""#),
        unknown(error_body(500), "list, start a, get a*5", r#"read_back="get machine {a}: HTTP 500: server error""#),
        unknown(html_502(), "list, start a, get a*5", r#"read_back="get machine {a}: HTTP 502: \"502 Bad Gateway\"""#),
        unknown(Fault::MalformedJson, "list, start a, get a", r#"read_back="get machine {a}: HTTP 200 with a body that is not the expected JSON"#),
        unknown(Fault::Drop, "list, start a, get a*5", r#"read_back="get machine {a}: connection failed: Peer disconnected""#),
        unknown(Fault::Hang(HANG), "list, start a, get a", r#"read_back="get machine {a}: timed out""#),
        unknown(redirect(302), "list, start a, get a", r#"read_back="get machine {a}: HTTP 302 redirect to"#),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_the_deploy_guard() {
    use On::Graphql;
    // No release status, no scaling (until deploy-guard-fail-open-after, which -once never
    // reaches): not even the list is asked for.
    let blocked = |fault: Fault, text: &'static str| api(Graphql, fault, "", 1, Some(text));
    run_rows(vec![
        blocked(error_body(401), r#"get current release failed app=my-app err="release status of my-app: server returned a non-200 status code: 401"#),
        blocked(error_body(500), "release status of my-app: server returned a non-200 status code: 500"),
        blocked(html_502(), r#"release status of my-app: server returned a non-200 status code: 502 (\"502 Bad Gateway\")"#),
        blocked(Fault::Hang(HANG), "release status of my-app: timed out"),
        blocked(Fault::Drop, "release status of my-app: connection failed: Peer disconnected"),
        blocked(Fault::MalformedJson, "release status of my-app: response is not JSON"),
        blocked(status(200, r#"{"data":null,"errors":[{"message":"You must be authenticated"}]}"#), "release status of my-app: You must be authenticated"),
        blocked(redirect(302), "release status of my-app: HTTP 302 redirect to"),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_the_organization_app_list() {
    use On::OrgApps;
    let no_apps = |fault: Fault, text: &'static str| api(OrgApps, fault, "", 1, Some(text));
    run_rows(vec![
        no_apps(error_body(403), r#"app list update failed err="list apps of organization my-org: HTTP 403: permission_denied: forbidden""#),
        no_apps(error_body(404), "list apps of organization my-org: HTTP 404"),
        no_apps(error_body(500), "list apps of organization my-org: HTTP 500: server error"),
        no_apps(Fault::MalformedJson, "list apps of organization my-org: HTTP 200 with a body that is not the expected JSON"),
        no_apps(redirect(301), "list apps of organization my-org: HTTP 301 redirect to"),
        // Duplicates are one app; a null name is no app.
        api(OrgApps, status(200, r#"{"apps":[{"name":"my-app"},{"name":"my-app"},{"name":null}]}"#), "list, start a", 0, None),
    ]);
}

#[rustfmt::skip]
#[test]
fn faults_on_the_metric_source() {
    // A failed collection or expression changes nothing: not even the list is asked for.
    let failed = |reply: Reply, text: &'static str| metric(reply, "", 1, Some(text));
    run_rows(vec![
        failed(prometheus_value("NaN"), "cannot calculate min started machine count: expression returned NaN"),
        failed(prometheus_value("+Inf"), "cannot calculate min started machine count: expression returned Inf"),
        failed(prometheus_value("-Inf"), "cannot calculate min started machine count: expression returned Inf"),
        failed(prometheus_value("not a number"), r#"cannot parse prometheus result as float64: \"not a number\""#),
        // A negative count is 0, as in Go: b is stopped.
        metric(prometheus_value("-5"), "list, stop b", 0, None),
        // 1e308 is clamped to max-machines: a is started, and that is all there is.
        metric(prometheus_value("1e308"), "list, start a", 0, None),
        failed(Reply::json(200, r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#), "empty prometheus result: the query matched no series"),
        failed(Reply::json(400, r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#), "bad_data: parse error at char 3 (HTTP 400)"),
        failed(Reply::json(500, r#"{"status":"error","errorType":"internal","error":"boom"}"#), "internal: boom (HTTP 500)"),
        failed(Reply::text(502, "text/html", HTML_502), r#"HTTP 502 with a non-JSON body (text/html): \"502 Bad Gateway\""#),
        failed(Reply::json(200, r#"{"status":"success","data":{"resultType":"#), "HTTP 200 with a non-JSON body (application/json)"),
        failed(Reply::json(200, &huge_body()), "the answer is larger than 16 MiB, more than any valid answer; refused"),
        failed(prometheus_value("1").delayed(HANG), "request timed out after"),
    ]);
}
