//! The Machines API's vocabulary, below both the client (`machines`) and the planner (`plan`):
//! the machine as listed, the state table, the create request, and a streaming reader for
//! machine lists.
//!
//! Memory: a real machine is 2–4 KB of JSON, mostly its `config`. The list is read as a stream
//! and only the first clone candidate of each process group keeps its config (as the raw JSON
//! the API sent, so a clone sends back fields this client does not model unchanged); every
//! other machine keeps a few short strings.

use std::collections::HashSet;
use std::fmt;
use std::io::{BufReader, Read};

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A machine as listed by `GET /v1/apps/{app}/machines` (or read back by id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub id: String,
    /// The state as the API wrote it; [`Machine::class`] says what it means.
    pub state: String,
    pub region: String,
    pub host_status: String,
    /// `fly_process_group` metadata, else the legacy `process_group`, else empty.
    pub process_group: String,
    /// RFC 3339, as the API wrote it (sorts in time order).
    pub created_at: String,
    /// The source of a clone: its config and full image reference. Kept only for the first
    /// clone candidate of each process group (see the module docs).
    pub clone: Option<CloneSource>,
}

/// What a create needs from the machine it clones.
#[derive(Debug, Clone)]
pub struct CloneSource {
    pub config: Box<RawValue>,
    /// `registry/repository[:tag][@digest]`, empty when the API sent no `image_ref`.
    pub image: String,
}

impl PartialEq for CloneSource {
    fn eq(&self, other: &CloneSource) -> bool {
        self.config.get() == other.config.get() && self.image == other.image
    }
}

/// The four states the autoscaler counts and acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stable {
    /// Created and not started (e.g. a `skip_launch` machine).
    Created,
    Started,
    Stopped,
    Suspended,
}

/// Where a transient state ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    State(Stable),
    /// A machine being created ends in the configured initial state.
    Initial,
}

/// The state table (Machines API reference §4.6), in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    /// Counted, and may be acted on.
    Stable(Stable),
    /// Counted as the state it ends in; never acted on.
    Transient(Toward),
    /// Neither counted nor acted on: `destroying`, `destroyed`, `failed`, `launch_failed` and
    /// any state not in the table.
    Ignored,
}

impl StateClass {
    pub fn of(state: &str) -> StateClass {
        use Stable::*;
        match state {
            "created" => StateClass::Stable(Created),
            "started" => StateClass::Stable(Started),
            "stopped" => StateClass::Stable(Stopped),
            "suspended" => StateClass::Stable(Suspended),
            "starting" | "updating" | "replacing" | "restarting" => {
                StateClass::Transient(Toward::State(Started))
            }
            "stopping" => StateClass::Transient(Toward::State(Stopped)),
            "suspending" => StateClass::Transient(Toward::State(Suspended)),
            "creating" | "launching" => StateClass::Transient(Toward::Initial),
            _ => StateClass::Ignored,
        }
    }
}

impl Machine {
    pub fn class(&self) -> StateClass {
        StateClass::of(&self.state)
    }

    /// May be cloned, if it has a config: an id, a reachable host (the Go rule: `host_status`
    /// exactly `ok`) and a stable state (a machine in transition may be changing its config).
    pub fn may_be_cloned(&self) -> bool {
        !self.id.is_empty()
            && self.host_status == "ok"
            && matches!(self.class(), StateClass::Stable(_))
    }
}

/// `POST /v1/apps/{app}/machines`: what the Go program sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreateRequest<'a> {
    pub region: &'a str,
    /// The clone source's config with `image` pinned.
    pub config: &'a Value,
    pub skip_launch: bool,
}

impl CreateRequest<'_> {
    pub fn to_json(self) -> String {
        let mut body = serde_json::json!({ "config": self.config, "region": self.region });
        if self.skip_launch {
            body["skip_launch"] = Value::Bool(true);
        }
        body.to_string()
    }
}

impl CloneSource {
    /// The config to create a clone with: as the API returned it, with `image` set to the
    /// full reference the source runs, so clones are pinned to its exact digest.
    pub fn pinned_config(&self) -> Value {
        let mut config: Value = serde_json::from_str(self.config.get()).unwrap_or(Value::Null);
        if let (false, Some(obj)) = (self.image.is_empty(), config.as_object_mut()) {
            obj.insert("image".to_string(), Value::String(self.image.clone()));
        }
        config
    }
}

/// An app of an organization, from `GET /v1/apps?org_slug=`.
#[derive(Debug, Clone, Deserialize)]
pub struct OrgApps {
    #[serde(default, deserialize_with = "nullable")]
    pub apps: Vec<OrgApp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrgApp {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
}

/// An error body: `{"error": "...", "message"?: "...", "status"?: "insufficient_capacity"}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "nullable")]
    pub error: String,
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
}

/// A machine list that could not be read.
#[derive(Debug)]
pub enum ListError {
    /// More machines than the configured bound.
    TooMany(usize),
    /// Not the JSON the API documents, or the connection broke while reading.
    Json(serde_json::Error),
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::TooMany(max) => write!(
                f,
                "the app has more than {max} machines, the most this autoscaler reads; \
                 split it into several apps"
            ),
            ListError::Json(e) => write!(f, "the body is not the expected machine list: {e}"),
        }
    }
}

impl std::error::Error for ListError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListError::TooMany(_) => None,
            ListError::Json(e) => Some(e),
        }
    }
}

/// Reads a machine list as a stream, stopping after `max` machines.
pub fn read_machine_list(body: impl Read, max: usize) -> Result<Vec<Machine>, ListError> {
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(16 * 1024, body));
    let machines = ListSeed { max }
        .deserialize(&mut de)
        .map_err(|e| too_many_or_json(e, max))?;
    de.end().map_err(ListError::Json)?;
    Ok(machines)
}

/// Reads one machine (`GET …/machines/{id}`); its config is not kept.
pub fn read_machine(body: &str) -> Result<Machine, serde_json::Error> {
    let wire: WireMachine = serde_json::from_str(body)?;
    Ok(wire.into_machine(false))
}

const TOO_MANY: &str = "too many machines";

fn too_many_or_json(e: serde_json::Error, max: usize) -> ListError {
    if e.to_string().starts_with(TOO_MANY) {
        ListError::TooMany(max)
    } else {
        ListError::Json(e)
    }
}

struct ListSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<Machine>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Machine>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<Machine>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of machines")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Machine>, A::Error> {
        let mut machines = Vec::new();
        let mut groups_with_source: HashSet<String> = HashSet::new();
        while let Some(wire) = seq.next_element::<WireMachine>()? {
            if machines.len() == self.max {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            let machine = wire.into_machine(true);
            let keep = machine.clone.is_some()
                && machine.may_be_cloned()
                && groups_with_source.insert(machine.process_group.clone());
            machines.push(if keep {
                machine
            } else {
                Machine {
                    clone: None,
                    ..machine
                }
            });
        }
        Ok(machines)
    }
}

/// A listed machine as sent; only what the autoscaler reads.
#[derive(Deserialize)]
struct WireMachine {
    #[serde(default, deserialize_with = "nullable")]
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    state: String,
    #[serde(default, deserialize_with = "nullable")]
    region: String,
    #[serde(default, deserialize_with = "nullable")]
    host_status: String,
    #[serde(default, deserialize_with = "nullable")]
    created_at: String,
    #[serde(default)]
    image_ref: Option<ImageRef>,
    #[serde(default)]
    config: Option<Box<RawValue>>,
    /// Sent instead of `config` when the host is unreachable; read only for the group.
    #[serde(default)]
    incomplete_config: Option<Box<RawValue>>,
}

impl WireMachine {
    fn into_machine(self, keep_config: bool) -> Machine {
        let process_group = self
            .config
            .as_deref()
            .or(self.incomplete_config.as_deref())
            .map(process_group)
            .unwrap_or_default();
        let clone = match (keep_config, self.config) {
            (true, Some(config)) if config.get() != "null" => Some(CloneSource {
                config,
                image: self.image_ref.map(|r| r.full()).unwrap_or_default(),
            }),
            _ => None,
        };
        Machine {
            id: self.id,
            state: self.state,
            region: self.region,
            host_status: self.host_status,
            process_group,
            created_at: self.created_at,
            clone,
        }
    }
}

/// `image_ref`: the parts of the image the machine actually runs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
struct ImageRef {
    #[serde(default, deserialize_with = "nullable")]
    registry: String,
    #[serde(default, deserialize_with = "nullable")]
    repository: String,
    #[serde(default, deserialize_with = "nullable")]
    tag: String,
    #[serde(default, deserialize_with = "nullable")]
    digest: String,
}

impl ImageRef {
    /// `registry/repository[:tag][@digest]`, as fly-go's `FullImageRef`.
    fn full(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if !self.tag.is_empty() {
            s.push(':');
            s.push_str(&self.tag);
        }
        if !self.digest.is_empty() {
            s.push('@');
            s.push_str(&self.digest);
        }
        s
    }
}

/// fly-go's `ProcessGroup()`: `fly_process_group` metadata, else the legacy `process_group`;
/// anything malformed reads as no group.
fn process_group(config: &RawValue) -> String {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        metadata: Option<Metadata>,
    }
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        fly_process_group: Option<Value>,
        #[serde(default)]
        process_group: Option<Value>,
    }
    let Ok(Config {
        metadata: Some(meta),
    }) = serde_json::from_str::<Config>(config.get())
    else {
        return String::new();
    };
    let get = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    get(&meta.fly_process_group)
        .or_else(|| get(&meta.process_group))
        .unwrap_or_default()
}

/// `null` → the type's default, so one `null` never fails a whole list.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../testdata/fixtures/list-machines-response.json");

    fn list(json: &str) -> Vec<Machine> {
        read_machine_list(json.as_bytes(), 100).unwrap()
    }

    #[test]
    fn decodes_the_list_fixture() {
        let machines = list(FIXTURE);
        assert_eq!(machines.len(), 8);
        let m = &machines[0];
        assert_eq!(m.id, "e2865641be1d86");
        assert_eq!(m.state, "started");
        assert_eq!(m.host_status, "ok");
        assert_eq!(m.process_group, "app");
        assert_eq!(m.created_at, "2024-09-30T10:00:00Z");
        assert_eq!(
            m.clone.as_ref().unwrap().image,
            "registry.fly.io/my-app:deployment-01J8ZK0A7Q5X2N4W6R8T0Y1M3P@sha256:6a0e2dbc75177ccbbf7e46eacf0988c848879877e8f2f6df9300b0882ea433e3"
        );
        let groups: Vec<&str> = machines.iter().map(|m| m.process_group.as_str()).collect();
        assert_eq!(
            groups,
            ["app", "app", "app", "app", "worker", "app", "app", "app"]
        );
        assert_eq!(machines[6].host_status, "unreachable");
        // Only the first usable machine of each group keeps its config.
        let kept: Vec<&str> = machines
            .iter()
            .filter(|m| m.clone.is_some())
            .map(|m| m.process_group.as_str())
            .collect();
        assert_eq!(kept, ["app", "worker"]);
    }

    #[test]
    fn tolerates_nulls_and_unknown_fields() {
        let machines = list(
            r#"[{"id":"1","state":null,"region":null,"host_status":null,"image_ref":{"registry":null,"repository":"r","tag":null,"labels":null},"config":null,"new_field":{"x":1}},
                {"id":null,"config":{"metadata":"not an object"}}]"#,
        );
        assert_eq!(machines[0].state, "");
        assert_eq!(machines[0].clone, None);
        assert_eq!(machines[0].process_group, "");
        assert_eq!(machines[1].id, "");
        assert_eq!(machines[1].process_group, "");
    }

    #[test]
    fn stops_at_the_machine_bound() {
        let three = r#"[{"id":"1"},{"id":"2"},{"id":"3"}]"#;
        assert!(matches!(
            read_machine_list(three.as_bytes(), 2),
            Err(ListError::TooMany(2))
        ));
        assert_eq!(read_machine_list(three.as_bytes(), 3).unwrap().len(), 3);
        assert!(matches!(
            read_machine_list(&b"{\"not\":\"a list\"}"[..], 3),
            Err(ListError::Json(_))
        ));
        assert!(matches!(
            read_machine_list(&b"[{\"id\":\"1\"}] trailing"[..], 3),
            Err(ListError::Json(_))
        ));
    }

    #[test]
    fn state_table() {
        use Stable::*;
        let cases = [
            ("created", StateClass::Stable(Created)),
            ("started", StateClass::Stable(Started)),
            ("stopped", StateClass::Stable(Stopped)),
            ("suspended", StateClass::Stable(Suspended)),
            ("starting", StateClass::Transient(Toward::State(Started))),
            ("updating", StateClass::Transient(Toward::State(Started))),
            ("replacing", StateClass::Transient(Toward::State(Started))),
            ("restarting", StateClass::Transient(Toward::State(Started))),
            ("stopping", StateClass::Transient(Toward::State(Stopped))),
            (
                "suspending",
                StateClass::Transient(Toward::State(Suspended)),
            ),
            ("creating", StateClass::Transient(Toward::Initial)),
            ("launching", StateClass::Transient(Toward::Initial)),
            ("destroying", StateClass::Ignored),
            ("destroyed", StateClass::Ignored),
            ("failed", StateClass::Ignored),
            ("launch_failed", StateClass::Ignored),
            ("migrated", StateClass::Ignored),
            ("", StateClass::Ignored),
        ];
        for (state, class) in cases {
            assert_eq!(StateClass::of(state), class, "{state}");
        }
    }

    #[test]
    fn full_image_ref_forms() {
        let r = |tag: &str, digest: &str| ImageRef {
            registry: "registry-1.docker.io".into(),
            repository: "library/ubuntu".into(),
            tag: tag.into(),
            digest: digest.into(),
        };
        assert_eq!(
            r("latest", "").full(),
            "registry-1.docker.io/library/ubuntu:latest"
        );
        assert_eq!(
            r("", "sha256:ab").full(),
            "registry-1.docker.io/library/ubuntu@sha256:ab"
        );
        assert_eq!(r("", "").full(), "registry-1.docker.io/library/ubuntu");
    }

    /// The reader over random input: never a panic, never more than `max` machines, and on
    /// generated lists exactly the oracle's answer.
    mod properties {
        use super::*;
        use crate::testing::{self, json_ish_bytes, machine_list};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(testing::cases(512))]

            #[test]
            fn any_bytes_are_a_list_within_the_bound_or_an_error(
                bytes in json_ish_bytes(),
                max in 0usize..8,
            ) {
                if let Ok(machines) = read_machine_list(&bytes[..], max) {
                    prop_assert!(machines.len() <= max);
                }
            }

            #[test]
            fn generated_lists_are_read_as_the_oracle_says(
                list in machine_list(12),
                max in 0usize..14,
            ) {
                let values: Vec<Value> = list.iter().map(|(v, _)| v.clone()).collect();
                let text = serde_json::to_string(&values).unwrap();
                // Machines are read one by one and the bound checked when one more arrives:
                // an ill-formed machine among the first `max + 1` fails the list as JSON.
                let first_bad = list.iter().position(|(_, ok)| !ok);
                let result = read_machine_list(text.as_bytes(), max);
                match (first_bad, result) {
                    (Some(bad), Err(ListError::Json(_))) => prop_assert!(bad <= max),
                    (_, Err(ListError::TooMany(m))) => {
                        prop_assert_eq!(m, max);
                        prop_assert!(list.len() > max && first_bad.is_none_or(|b| b > max));
                    }
                    (None, Ok(machines)) => {
                        prop_assert!(list.len() <= max);
                        prop_assert_eq!(machines.len(), list.len());
                        // Only the first clone candidate of each group keeps its config.
                        let mut groups = HashSet::new();
                        for (m, v) in machines.iter().zip(&values) {
                            let text = |key| v.get(key).and_then(Value::as_str).unwrap_or("");
                            prop_assert_eq!(m.id.as_str(), text("id"));
                            prop_assert_eq!(m.state.as_str(), text("state"));
                            let has_config = v.get("config").is_some_and(|c| !c.is_null());
                            let source = m.may_be_cloned()
                                && has_config
                                && !groups.contains(&m.process_group);
                            prop_assert_eq!(m.clone.is_some(), source, "{:?}", m);
                            if source {
                                groups.insert(m.process_group.clone());
                            }
                        }
                    }
                    (bad, other) => prop_assert!(false, "first ill-formed {bad:?}, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn clone_config_is_pinned_and_keeps_unknown_fields() {
        let source = CloneSource {
            config: RawValue::from_string(r#"{"image":"old","future":{"x":1}}"#.into()).unwrap(),
            image: "reg/app@sha256:1".into(),
        };
        let config = source.pinned_config();
        let req = CreateRequest {
            region: "ord",
            config: &config,
            skip_launch: true,
        };
        let body: Value = serde_json::from_str(&req.to_json()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"config": {"image": "reg/app@sha256:1", "future": {"x": 1}}, "region": "ord", "skip_launch": true})
        );
    }
}
