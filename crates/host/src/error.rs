//! Typed errors at the host crate's edges.

use std::path::PathBuf;

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// Manifest path.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema.
    #[error("invalid spin.toml: {0}")]
    Syntax(String),
    /// Only manifest version 2 is supported (as by Spin 2+).
    #[error("spin_manifest_version {0} is not supported (expected 2)")]
    Version(u32),
    /// A trigger names a component that has no `[component.<id>]` table.
    #[error("{trigger} names component `{component}`, which is not defined")]
    UnknownComponent {
        /// Which trigger.
        trigger: String,
        /// The missing component id.
        component: String,
    },
    /// Any other schema violation.
    #[error("invalid spin.toml: {0}")]
    Invalid(String),
}

/// Why a variable could not be resolved.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VariableError {
    /// The name breaks Spin's grammar.
    #[error("invalid variable name `{0}`")]
    InvalidName(String),
    /// The component (or application) does not define it.
    #[error("variable `{0}` is not defined")]
    Undefined(String),
    /// A required variable has no value from any provider.
    #[error("required variable `{0}` has no value (set SPIN_VARIABLE_{1})")]
    Missing(String, String),
}
