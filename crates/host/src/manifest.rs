//! `spin.toml` (manifest version 2): the subset of Spin's schema the embedded host runs.
//!
//! Unknown keys are ignored the way Spin ignores keys of triggers it does not run, but
//! every key this host *acts on* is parsed strictly, so a typo fails at load, not at the
//! first request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ManifestError;

/// A parsed application manifest, with paths resolved against the manifest's folder.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `[application] name`.
    pub name: String,
    /// `[application] version`.
    pub version: String,
    /// The folder holding `spin.toml`; component sources are relative to it.
    pub base_dir: PathBuf,
    /// `[variables]`: application variables.
    pub variables: BTreeMap<String, VariableDef>,
    /// `[[trigger.http]]` entries.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.redis]]` entries.
    pub redis_triggers: Vec<RedisTrigger>,
    /// `[application.trigger.redis] address`, the default for Redis triggers.
    pub redis_trigger_address: Option<String>,
    /// `[component.<id>]` tables by id.
    pub components: BTreeMap<String, ComponentDef>,
}

/// One application variable.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VariableDef {
    /// Value used when no provider overrides it.
    #[serde(default)]
    pub default: Option<String>,
    /// A required variable has no default and must be provided.
    #[serde(default)]
    pub required: bool,
    /// Secret variables are never logged.
    #[serde(default)]
    pub secret: bool,
}

/// An HTTP trigger: a route served by a component.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    /// `/exact` or `/prefix/...` (wildcard).
    pub route: String,
    /// Component id.
    pub component: String,
}

/// A Redis trigger: messages on a channel delivered to a component.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisTrigger {
    /// Channel to SUBSCRIBE to.
    pub channel: String,
    /// Component id.
    pub component: String,
    /// Per-trigger Redis address (Spin 3); falls back to the application default.
    #[serde(default)]
    pub address: Option<String>,
}

/// One `[component.<id>]` table.
#[derive(Debug, Clone)]
pub struct ComponentDef {
    /// Component id (the table's key).
    pub id: String,
    /// Absolute path of the `.wasm` file.
    pub source: PathBuf,
    /// Key-value store labels the component may open.
    pub key_value_stores: Vec<String>,
    /// Outbound destinations (`scheme://host:port` patterns, may hold `{{ var }}`).
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables: name → template over application variables.
    pub variables: BTreeMap<String, String>,
    /// `[component.<id>.build]`: how `spin build` (and `earshot up --build`) builds it.
    pub build: Option<BuildDef>,
}

/// A component's build step.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildDef {
    /// Shell command.
    pub command: String,
    /// Folder to run it in, relative to the manifest (default: the manifest's folder).
    #[serde(default)]
    pub workdir: Option<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDef>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    trigger: RawAppTriggers,
}

#[derive(Deserialize, Default)]
struct RawAppTriggers {
    #[serde(default)]
    redis: Option<RawAppRedis>,
}

#[derive(Deserialize)]
struct RawAppRedis {
    address: String,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
    #[serde(default)]
    redis: Vec<RedisTrigger>,
}

#[derive(Deserialize)]
struct RawComponent {
    source: RawSource,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    build: Option<BuildDef>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSource {
    Path(String),
    Remote { url: String },
}

impl Manifest {
    /// Reads and validates `spin.toml` at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &base_dir)
    }

    /// Parses manifest text; `base_dir` resolves relative component sources.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        if raw.spin_manifest_version != 2 {
            return Err(ManifestError::Version(raw.spin_manifest_version));
        }
        for (name, def) in &raw.variables {
            check_variable_name(name)?;
            if def.required && def.default.is_some() {
                return Err(ManifestError::Invalid(format!(
                    "variable `{name}` cannot be both required and have a default"
                )));
            }
        }
        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let source = match c.source {
                RawSource::Path(p) => base_dir.join(p),
                RawSource::Remote { url } => {
                    return Err(ManifestError::Invalid(format!(
                        "component `{id}`: remote sources ({url}) are not supported by the embedded host; build the component locally"
                    )))
                }
            };
            for name in c.variables.keys() {
                check_variable_name(name)?;
            }
            components.insert(
                id.clone(),
                ComponentDef {
                    id,
                    source,
                    key_value_stores: c.key_value_stores,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    variables: c.variables,
                    build: c.build,
                },
            );
        }
        let triggers = raw.trigger;
        for t in &triggers.http {
            if !components.contains_key(&t.component) {
                return Err(ManifestError::UnknownComponent {
                    trigger: format!("http route {}", t.route),
                    component: t.component.clone(),
                });
            }
            if !t.route.starts_with('/') {
                return Err(ManifestError::Invalid(format!("route `{}` must start with `/`", t.route)));
            }
        }
        for t in &triggers.redis {
            if !components.contains_key(&t.component) {
                return Err(ManifestError::UnknownComponent {
                    trigger: format!("redis channel {}", t.channel),
                    component: t.component.clone(),
                });
            }
        }
        Ok(Manifest {
            name: raw.application.name,
            version: raw.application.version.unwrap_or_default(),
            base_dir: base_dir.to_owned(),
            variables: raw.variables,
            http_triggers: triggers.http,
            redis_triggers: triggers.redis,
            redis_trigger_address: raw.application.trigger.redis.map(|r| r.address),
            components,
        })
    }
}

/// Spin's variable-name grammar: lowercase letters, digits and underscores, starting
/// with a letter.
pub fn check_variable_name(name: &str) -> Result<(), ManifestError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid(format!(
            "variable name `{name}` must be lowercase letters, digits and `_`, starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
version = "1.2.3"
[application.trigger.redis]
address = "redis://127.0.0.1:6379"
[variables]
secret = { required = true, secret = true }
greeting = { default = "hi" }
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.redis]]
channel = "events"
component = "worker"
[component.api]
source = "api.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["redis://*:*"]
[component.api.variables]
greeting = "{{ greeting }}!"
[component.api.build]
command = "cargo build"
[component.worker]
source = "w.wasm"
"#;

    #[test]
    fn parses_the_keys_the_host_runs() {
        let m = Manifest::parse(SAMPLE, Path::new("/app")).unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(m.version, "1.2.3");
        assert_eq!(m.http_triggers[0].route, "/api/...");
        assert_eq!(m.redis_triggers[0].channel, "events");
        assert_eq!(m.redis_trigger_address.as_deref(), Some("redis://127.0.0.1:6379"));
        let api = &m.components["api"];
        assert_eq!(api.source, Path::new("/app/api.wasm"));
        assert_eq!(api.key_value_stores, ["default"]);
        assert_eq!(api.variables["greeting"], "{{ greeting }}!");
        assert!(m.variables["secret"].required);
    }

    #[test]
    fn rejects_a_trigger_naming_a_missing_component() {
        let bad = SAMPLE.replace("component = \"worker\"", "component = \"nope\"");
        let err = Manifest::parse(&bad, Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn rejects_bad_variable_names_and_versions() {
        let bad = SAMPLE.replace("greeting = { default", "Greeting = { default");
        assert!(Manifest::parse(&bad, Path::new("/")).is_err());
        let bad = SAMPLE.replace("spin_manifest_version = 2", "spin_manifest_version = 1");
        assert!(matches!(Manifest::parse(&bad, Path::new("/")), Err(ManifestError::Version(1))));
    }
}
