//! One machine, stored as the JSON object the API returns for it, plus the transition it is
//! in. Generated machines keep `events`, `checks` and `updated_at` in step with their state;
//! raw machines (seeded verbatim) only ever have their `state` changed.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::util::{Rng, fnv1a, now_ms, rfc3339, ulid};

/// Digest-pinned image of the reference fixtures.
pub(crate) const DEFAULT_IMAGE: &str = "registry.fly.io/my-app:deployment-01J8ZK0A7Q5X2N4W6R8T0Y1M3P@sha256:6a0e2dbc75177ccbbf7e46eacf0988c848879877e8f2f6df9300b0882ea433e3";

pub(crate) struct Machine {
    json: Value,
    raw: bool,
    /// The end state of a transition in progress (`None`: destroyed, gone) and when it is
    /// reached.
    pending: Option<(Option<String>, Instant)>,
}

/// What a generated machine is made of.
pub(crate) struct Seed<'a> {
    pub(crate) id: String,
    pub(crate) name: Option<&'a str>,
    pub(crate) state: &'a str,
    pub(crate) region: &'a str,
    pub(crate) image: &'a str,
    pub(crate) config: Value,
    pub(crate) host_status: Option<&'a str>,
}

impl Machine {
    /// A machine shaped like `fixtures/list-machines-response.json`.
    pub(crate) fn generated(seed: Seed<'_>, rng: &mut Rng) -> Machine {
        let (r1, r2) = (rng.next(), rng.next());
        let now = rfc3339(now_ms());
        let name = seed.name.map_or_else(|| generated_name(r1), str::to_string);
        let mut m = Map::new();
        m.insert("id".into(), json!(seed.id));
        m.insert("name".into(), json!(name));
        m.insert("state".into(), json!(seed.state));
        m.insert("region".into(), json!(seed.region));
        m.insert("image_ref".into(), image_ref(seed.image));
        let instance = ulid(now_ms(), (u128::from(r1) << 64) | u128::from(r2));
        m.insert("instance_id".into(), json!(instance));
        m.insert("version".into(), json!(instance));
        m.insert(
            "private_ip".into(),
            json!(format!(
                "fdaa:9:1c2d:a7b:{:x}:{:x}:{:x}:2",
                0x100 + (r2 & 0xfff),
                (r1 >> 20) & 0xffff,
                (r1 >> 36) & 0xffff
            )),
        );
        m.insert("created_at".into(), json!(now));
        m.insert("updated_at".into(), json!(now));
        if seed.host_status == Some("unreachable") {
            // The API cannot reach the host: only a partial config rebuilt from other
            // sources, and no events (reference §4.7, fixture machine 148e3d1c2f0b78).
            let partial: Map<String, Value> = ["image", "metadata", "guest"]
                .into_iter()
                .filter_map(|k| Some((k.to_string(), seed.config.get(k)?.clone())))
                .collect();
            m.insert("incomplete_config".into(), Value::Object(partial));
        } else {
            m.insert("config".into(), seed.config);
            m.insert("events".into(), json!([]));
        }
        if let Some(h) = seed.host_status {
            m.insert("host_status".into(), json!(h));
        }
        let mut machine = Machine {
            json: Value::Object(m),
            raw: false,
            pending: None,
        };
        machine.enter(seed.state, "user");
        machine
    }

    pub(crate) fn raw(json: Value) -> Machine {
        Machine {
            json,
            raw: true,
            pending: None,
        }
    }

    pub(crate) fn id(&self) -> Option<&str> {
        self.json.get("id")?.as_str()
    }

    pub(crate) fn state(&self) -> &str {
        self.json.get("state").and_then(Value::as_str).unwrap_or("")
    }

    pub(crate) fn json(&self) -> &Value {
        &self.json
    }

    /// Sets the state now, cancelling any transition in progress.
    pub(crate) fn set_state(&mut self, state: &str, source: &str) {
        self.pending = None;
        self.enter(state, source);
    }

    /// Enters `transient` now (unless already there) and `end` after `after` (`None`: the
    /// machine is then gone).
    pub(crate) fn begin(&mut self, transient: &str, end: Option<&str>, after: Duration) {
        if self.state() != transient {
            self.enter(transient, "user");
        }
        self.pending = Some((end.map(str::to_string), Instant::now() + after));
    }

    pub(crate) fn in_transition(&self) -> bool {
        self.pending.is_some()
    }

    /// Completes a due transition; `false` once the machine is destroyed.
    pub(crate) fn settle(&mut self, now: Instant) -> bool {
        match self.pending.take() {
            Some((end, at)) if at <= now => match end {
                Some(state) => self.enter(&state, "flyd"),
                None => return false,
            },
            pending => self.pending = pending,
        }
        true
    }

    /// Writes `state` with what the platform records alongside it.
    fn enter(&mut self, state: &str, source: &str) {
        let raw = self.raw;
        let Some(m) = self.json.as_object_mut() else {
            return;
        };
        m.insert("state".into(), json!(state));
        if raw {
            return;
        }
        let ms = now_ms();
        m.insert("updated_at".into(), json!(rfc3339(ms)));
        if let Some(Value::Array(events)) = m.get_mut("events") {
            events.insert(
                0,
                json!({"type": event_type(state), "status": state, "source": source, "timestamp": ms}),
            );
            events.truncate(10);
        }
        match checks(m.get("config"), state) {
            Some(c) => m.insert("checks".into(), c),
            None => m.remove("checks"),
        };
    }
}

fn event_type(state: &str) -> &'static str {
    match state {
        "created" => "launch",
        "starting" | "started" => "start",
        "stopping" => "stop",
        "stopped" => "exit",
        "suspending" | "suspended" => "suspend",
        "destroying" | "destroyed" => "destroy",
        _ => "update",
    }
}

/// Health checks of the config's services: passing while started, warning while stopped,
/// none in any other state.
fn checks(config: Option<&Value>, state: &str) -> Option<Value> {
    let (status, output) = match state {
        "started" => ("passing", "Success"),
        "stopped" => ("warning", "the machine hasn't started"),
        _ => return None,
    };
    let services = config?.get("services")?.as_array()?;
    let checks: Vec<Value> = services
        .iter()
        .enumerate()
        .flat_map(|(i, svc)| {
            let port = svc
                .get("internal_port")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let list = svc.get("checks").and_then(Value::as_array);
            list.into_iter().flatten().map(move |c| {
                let kind = c.get("type").and_then(Value::as_str).unwrap_or("tcp");
                json!({
                    "name": format!("servicecheck-{i:02}-{kind}-{port}"),
                    "status": status,
                    "output": output,
                    "updated_at": rfc3339(now_ms()),
                })
            })
        })
        .collect();
    (!checks.is_empty()).then_some(Value::Array(checks))
}

fn generated_name(r: u64) -> String {
    const ADJ: [&str; 8] = [
        "frosty", "quiet", "bold", "late", "green", "old", "dark", "cold",
    ];
    const NOUN: [&str; 8] = [
        "meadow", "river", "sun", "forest", "hill", "dust", "cloud", "wave",
    ];
    format!(
        "{}-{}-{}",
        ADJ[(r % 8) as usize],
        NOUN[(r >> 8 & 7) as usize],
        1000 + (r >> 16) % 9000
    )
}

/// `metadata.fly_process_group`, else the legacy `metadata.process_group`, of the config
/// (or, for an unreachable host, the incomplete config), as fly-go reads it.
pub(crate) fn process_group(machine: &Value) -> Option<String> {
    let config = machine
        .get("config")
        .or_else(|| machine.get("incomplete_config"))?;
    let md = config.get("metadata")?;
    ["fly_process_group", "process_group"]
        .iter()
        .filter_map(|k| md.get(*k)?.as_str())
        .find(|g| !g.is_empty())
        .map(str::to_string)
}

/// A realistic config shaped like `fixtures/list-machines-response.json`.
pub(crate) fn default_config(image: &str, group: Option<&str>, region: &str) -> Value {
    let mut metadata = json!({
        "fly_flyctl_version": "0.3.10",
        "fly_platform_version": "v2",
        "fly_release_id": "Qz8rLmNoPqRsTuVwXyZ0aB1c",
        "fly_release_version": "42"
    });
    if let Some(g) = group {
        metadata["fly_process_group"] = json!(g);
    }
    json!({
        "env": {"PRIMARY_REGION": region},
        "init": {},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
        "metadata": metadata,
        "services": [{
            "protocol": "tcp",
            "internal_port": 8080,
            "autostop": true,
            "autostart": true,
            "min_machines_running": 0,
            "ports": [
                {"port": 80, "handlers": ["http"], "force_https": true},
                {"port": 443, "handlers": ["tls", "http"]}
            ],
            "checks": [{
                "type": "http", "interval": "15s", "timeout": "2s", "grace_period": "5s",
                "method": "GET", "path": "/healthz", "protocol": "http"
            }],
            "concurrency": {"type": "requests", "hard_limit": 25, "soft_limit": 20},
            "force_instance_key": null
        }],
        "metrics": {"port": 9091, "path": "/metrics"},
        "image": image,
        "restart": {"policy": "on-failure", "max_retries": 10},
        "dns": {},
        "stop_config": {"timeout": "30s", "signal": "SIGINT"}
    })
}

/// Splits a full image reference into the API's `image_ref` object. Without a digest it gets
/// a stable synthetic `sha256:` one, as the platform always resolves one.
fn image_ref(image: &str) -> Value {
    let (name_tag, digest) = match image.split_once('@') {
        Some((a, d)) => (a, d.to_string()),
        None => (
            image,
            (0..4).fold("sha256:".to_string(), |hex, seed| {
                format!("{hex}{:016x}", fnv1a(image.as_bytes(), seed))
            }),
        ),
    };
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        Some(_) => ("registry-1.docker.io".to_string(), name.to_string()),
        None => (
            "registry-1.docker.io".to_string(),
            format!("library/{name}"),
        ),
    };
    let mut m = Map::new();
    m.insert("registry".into(), json!(registry));
    m.insert("repository".into(), json!(repository));
    if let Some(t) = tag {
        m.insert("tag".into(), json!(t));
    }
    m.insert("digest".into(), json!(digest));
    m.insert("labels".into(), json!({}));
    Value::Object(m)
}
