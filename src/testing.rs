//! What the property tests share: how many cases they run, and generators of machine lists
//! as the Machines API might send them — well-formed or not.
//!
//! `make test` runs each property test's default number of cases; `make fuzz` sets
//! `PROPTEST_CASES` much higher (README, Tests).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// `cases` cases, or `PROPTEST_CASES` when set.
pub fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// One listed machine and whether the reader must accept it: `id`, `state`, `region`,
/// `host_status` and `created_at` may be strings, `null` or missing; `image_ref` an object
/// of such fields, `null` or missing; `config` anything; unknown fields anything. Anything
/// else (an id that is a number, a machine that is not an object) makes the list unreadable.
pub fn machine() -> impl Strategy<Value = (Value, bool)> {
    let text = |pool: &'static [&'static str]| {
        prop_oneof![
            8 => prop::sample::select(pool).prop_map(|s| Some(json!(s))),
            1 => Just(Some(Value::Null)),
            1 => Just(None),
        ]
    };
    let fields = (
        text(&["m1", "m2", "m3", "m4", "m5", "", "m1\n", "../m2", "m 6"]),
        text(&[
            "started",
            "stopped",
            "suspended",
            "created",
            "starting",
            "stopping",
            "replacing",
            "creating",
            "destroying",
            "destroyed",
            "failed",
            "launch_failed",
            "",
            "odd",
        ]),
        text(&["iad", "ord", ""]),
        text(&["ok", "ok", "ok", "unreachable", "unknown", ""]),
        text(&["2024-09-30T10:00:00Z", "2024-10-01T10:00:00Z", "not a time"]),
        prop_oneof![
            4 => Just(Some(json!({"registry": "registry.fly.io", "repository": "my-app", "tag": "v1", "digest": "sha256:0"}))),
            1 => Just(Some(json!({"registry": null, "repository": "r", "labels": {"a": "b"}}))),
            1 => Just(Some(Value::Null)),
            1 => Just(None),
        ],
        prop_oneof![
            3 => prop::sample::select(&["app", "worker", ""][..]).prop_map(|g| {
                Some(json!({"image": "img", "metadata": {"fly_process_group": g}, "services": [{"x": [1, {"y": null}]}]}))
            }),
            1 => Just(Some(json!({"metadata": {"process_group": "app"}}))),
            1 => Just(Some(json!({"metadata": "not an object"}))),
            1 => Just(Some(json!([1, 2]))),
            1 => Just(Some(Value::Null)),
            1 => Just(None),
        ],
        any::<bool>(),
    );
    let well_formed = fields.prop_map(
        |(id, state, region, host, created, image_ref, config, extra)| {
            let mut m = Map::new();
            for (key, value) in [
                ("id", id),
                ("state", state),
                ("region", region),
                ("host_status", host),
                ("created_at", created),
                ("image_ref", image_ref),
                ("config", config),
            ] {
                if let Some(v) = value {
                    m.insert(key.to_string(), v);
                }
            }
            if extra {
                m.insert("checks".into(), json!([{"name": "x", "status": "passing"}]));
                m.insert("future_field".into(), json!({"deep": [[[]]]}));
            }
            (Value::Object(m), true)
        },
    );
    let ill_formed = prop_oneof![
        Just(json!({"id": 7, "state": "started"})),
        Just(json!({"id": "m1", "state": ["started"]})),
        Just(json!({"id": "m1", "image_ref": "registry.fly.io/my-app"})),
        Just(json!({"id": "m1", "host_status": true})),
        Just(json!("m1")),
        Just(json!(5)),
        Just(Value::Null),
    ]
    .prop_map(|v| (v, false));
    // serde reads an array as a struct's fields in order: an empty one is a machine without
    // fields (no id: skipped by the planner).
    let empty_array = Just((json!([]), true));
    prop_oneof![24 => well_formed, 2 => ill_formed, 1 => empty_array]
}

/// A list of up to `n` machines, with whether the reader must accept each.
pub fn machine_list(n: usize) -> impl Strategy<Value = Vec<(Value, bool)>> {
    prop::collection::vec(machine(), 0..=n)
}

/// Bytes that are mostly not a machine list: random bytes, JSON punctuation and words, and
/// well-formed lists cut short or with bytes overwritten.
pub fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"[]{}\",:0123456789.-+eE truefalsnidstaecofgmp_\\\n\t\x00\xff";
    let mangled = (
        machine_list(6),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(list, edits, cut, truncate)| {
            let values: Vec<Value> = list.into_iter().map(|(v, _)| v).collect();
            let mut bytes = serde_json::to_vec(&values).expect("a JSON value");
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(prop::sample::select(ALPHABET), 0..300),
        mangled,
    ]
}
