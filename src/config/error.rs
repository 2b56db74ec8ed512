//! What a config can be wrong about, and secrets from the environment: a
//! leaf every config section (sources, sinks) uses, depending on nothing.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// `line` 0: the error is not on one line of the file.
    #[error("{path}{}: {message}", if *line > 0 { format!(":{line}") } else { String::new() })]
    Parse { path: String, line: usize, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("environment variable {var} is not set (named by {field})")]
    MissingEnv { var: String, field: String },
}

/// A secret from the environment variable `var` (named by the config field
/// `field`); unset or empty is an error that names both.
pub fn secret(var: &str, field: &str) -> Result<String, ConfigError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::MissingEnv { var: var.to_string(), field: field.to_string() })
}
