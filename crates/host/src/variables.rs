//! Application and component variables, resolved the way Spin resolves them:
//! a provider (here the environment, `SPIN_VARIABLE_<NAME>`, plus host overrides such
//! as `earshot up --redis`) wins over the manifest default; component variables are
//! `{{ name }}` templates over application variables.

use std::collections::BTreeMap;

use crate::error::VariableError;
use crate::manifest::{check_variable_name, Manifest};

/// Resolved application variables.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    values: BTreeMap<String, String>,
    secret: Vec<String>,
}

/// The environment variable Spin's environment provider reads for `name`.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

impl Variables {
    /// Resolves every application variable: `overrides` first, then
    /// `SPIN_VARIABLE_<NAME>` from `env`, then the default.
    pub fn resolve(
        manifest: &Manifest,
        overrides: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, VariableError> {
        let mut values = BTreeMap::new();
        let mut secret = Vec::new();
        for (name, def) in &manifest.variables {
            let value = overrides
                .get(name)
                .cloned()
                .or_else(|| env(&env_name(name)))
                .or_else(|| def.default.clone());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => return Err(VariableError::Missing(name.clone(), name.to_ascii_uppercase())),
            }
            if def.secret {
                secret.push(name.clone());
            }
        }
        Ok(Variables { values, secret })
    }

    /// The value of application variable `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether `name` is marked secret (never logged).
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret.iter().any(|s| s == name)
    }

    /// Renders a `{{ name }}` template over the application variables.
    pub fn render(&self, template: &str) -> Result<String, VariableError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| VariableError::InvalidName(template.to_owned()))?;
            let name = after[..end].trim();
            check_variable_name(name).map_err(|_| VariableError::InvalidName(name.to_owned()))?;
            let value = self
                .get(name)
                .ok_or_else(|| VariableError::Undefined(name.to_owned()))?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Resolves a component's own variables (name → rendered value).
    pub fn for_component(
        &self,
        templates: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VariableError> {
        templates
            .iter()
            .map(|(k, t)| Ok((k.clone(), self.render(t)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
greeting = { default = "hello" }
token = { required = true, secret = true }
"#,
            Path::new("/"),
        )
        .unwrap()
    }

    #[test]
    fn env_overrides_default_and_required_must_be_set() {
        let m = manifest();
        let err = Variables::resolve(&m, &BTreeMap::new(), |_| None).unwrap_err();
        assert_eq!(err, VariableError::Missing("token".into(), "TOKEN".into()));
        let vars = Variables::resolve(&m, &BTreeMap::new(), |k| match k {
            "SPIN_VARIABLE_GREETING" => Some("bonjour".into()),
            "SPIN_VARIABLE_TOKEN" => Some("t0k".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(vars.get("greeting"), Some("bonjour"));
        assert!(vars.is_secret("token"));
    }

    #[test]
    fn templates_render_and_reject_unknown_names() {
        let m = manifest();
        let overrides = BTreeMap::from([("token".to_owned(), "x".to_owned())]);
        let vars = Variables::resolve(&m, &overrides, |_| None).unwrap();
        assert_eq!(vars.render("say {{ greeting }}, {{token}}!").unwrap(), "say hello, x!");
        assert_eq!(vars.render("{{ nope }}"), Err(VariableError::Undefined("nope".into())));
    }
}
