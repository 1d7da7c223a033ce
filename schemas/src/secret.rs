//! Secrets in configuration: a provider key, a password, a token. A [`Secret`] never prints its
//! value (`Debug` shows `***`), and may be written `os.environ/VAR` in a config file to take the
//! value from the environment (LiteLLM's convention), resolved by [`Secret::resolve`].

use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;

/// A secret string: debug prints `***`, never the value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `os.environ/VAR` from `vars` (a config file's own environment), then the process
    /// environment; any other value as it is. `Err` names the variable that is not set.
    pub fn resolve(&self, vars: &HashMap<String, Secret>) -> Result<Secret, UnsetVariable> {
        match self.0.strip_prefix("os.environ/") {
            Some(var) => match vars.get(var) {
                Some(v) => Ok(v.clone()),
                None => std::env::var(var).map(Secret).map_err(|_| UnsetVariable(var.to_owned())),
            },
            None => Ok(self.clone()),
        }
    }
}

/// An `os.environ/VAR` secret whose variable is set nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {0} is not set")]
pub struct UnsetVariable(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_resolve_from_the_environment_and_never_print() {
        let vars: HashMap<String, Secret> = [("A".to_owned(), Secret::new("from-file"))].into_iter().collect();
        assert_eq!(Secret::new("os.environ/A").resolve(&vars).unwrap().expose(), "from-file");
        assert_eq!(Secret::new("plain").resolve(&vars).unwrap().expose(), "plain");
        let err = Secret::new("os.environ/TOLLGATE_SURELY_UNSET_VAR").resolve(&vars).unwrap_err();
        assert_eq!(err, UnsetVariable("TOLLGATE_SURELY_UNSET_VAR".into()));
        assert!(err.to_string().contains("TOLLGATE_SURELY_UNSET_VAR"), "{err}");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
