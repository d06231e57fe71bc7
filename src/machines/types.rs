//! Wire types of the Machines REST API. Every field tolerates absence and `null`, unknown
//! fields are ignored, and a machine's `config` stays the JSON the API returned, so a clone
//! sends back fields this client does not model (services, mounts, checks, …) unchanged.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A machine as listed by `GET /v1/apps/{app}/machines`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Machine {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub state: String,
    #[serde(default, deserialize_with = "nullable")]
    pub region: String,
    #[serde(default, deserialize_with = "nullable")]
    pub host_status: String,
    #[serde(default)]
    pub image_ref: Option<ImageRef>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub incomplete_config: Option<Value>,
}

/// `image_ref`: the parts of the image the machine actually runs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ImageRef {
    #[serde(default, deserialize_with = "nullable")]
    pub registry: String,
    #[serde(default, deserialize_with = "nullable")]
    pub repository: String,
    #[serde(default, deserialize_with = "nullable")]
    pub tag: String,
    #[serde(default, deserialize_with = "nullable")]
    pub digest: String,
}

impl ImageRef {
    /// `registry/repository[:tag][@digest]`, as fly-go's `FullImageRef`, so clones are pinned
    /// to the exact image the source runs.
    pub fn full(&self) -> String {
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

impl Machine {
    /// `fly_process_group` metadata, else the legacy `process_group`, else empty; read from
    /// `config`, or `incomplete_config` when the host could not be reached.
    pub fn process_group(&self) -> &str {
        let metadata = self
            .config
            .as_ref()
            .or(self.incomplete_config.as_ref())
            .and_then(|c| c.get("metadata"));
        let get = |key| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        get("fly_process_group")
            .or_else(|| get("process_group"))
            .unwrap_or("")
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

    const FIXTURE: &str = include_str!("../../testdata/fixtures/list-machines-response.json");

    #[test]
    fn decodes_the_list_fixture() {
        let machines: Vec<Machine> = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(machines.len(), 8);
        let m = &machines[0];
        assert_eq!(m.id, "e2865641be1d86");
        assert_eq!(m.state, "started");
        assert_eq!(m.host_status, "ok");
        assert_eq!(m.process_group(), "app");
        assert_eq!(
            m.image_ref.as_ref().unwrap().full(),
            "registry.fly.io/my-app:deployment-01J8ZK0A7Q5X2N4W6R8T0Y1M3P@sha256:6a0e2dbc75177ccbbf7e46eacf0988c848879877e8f2f6df9300b0882ea433e3"
        );
        let groups: Vec<&str> = machines.iter().map(Machine::process_group).collect();
        assert_eq!(
            groups,
            ["app", "app", "app", "app", "worker", "app", "app", "app"]
        );
        assert_eq!(machines[6].host_status, "unreachable");
        assert!(machines[6].config.is_none());
    }

    #[test]
    fn tolerates_nulls_and_unknown_fields() {
        let m: Machine = serde_json::from_str(
            r#"{"id":"1","state":null,"region":null,"host_status":null,"image_ref":{"registry":null,"repository":"r","tag":null,"labels":null},"config":null,"new_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(m.state, "");
        assert_eq!(m.image_ref.as_ref().unwrap().full(), "/r");
        assert_eq!(m.process_group(), "");
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
}
