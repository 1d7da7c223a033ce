//! LiteLLM's proxy config in Tollgate: which of its keys Tollgate acts on, which it accepts and
//! reports, and the check that any other key is an error naming the field and its line, so
//! that a typo never passes as a setting.
//!
//! The keys are data ([`keys`]). The sections LiteLLM shares with Tollgate read the keys
//! Tollgate acts on into typed fields and set every other key aside in a flattened map
//! (`litellm_only`); [`Config::check_litellm_keys`] then holds those maps to the tables.

mod keys;
pub use keys::Status;

use super::{Config, ConfigError};
use std::collections::BTreeMap;
use std::fmt;
use tollgate_schemas::yaml::Step;

/// A part of the file whose keys LiteLLM defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    TopLevel,
    LitellmParams,
    ModelInfo,
    RouterSettings,
    LitellmSettings,
    GeneralSettings,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::TopLevel,
        Section::LitellmParams,
        Section::ModelInfo,
        Section::RouterSettings,
        Section::LitellmSettings,
        Section::GeneralSettings,
    ];

    /// How the section is written in the file (`model_list[].` for a deployment's).
    pub fn name(self) -> &'static str {
        match self {
            Section::TopLevel => "",
            Section::LitellmParams => "model_list[].litellm_params",
            Section::ModelInfo => "model_list[].model_info",
            Section::RouterSettings => "router_settings",
            Section::LitellmSettings => "litellm_settings",
            Section::GeneralSettings => "general_settings",
        }
    }

    /// Every key of the section that Tollgate knows, with what it does with it.
    pub fn keys(self) -> &'static [(&'static str, Status)] {
        match self {
            Section::TopLevel => keys::TOP_LEVEL,
            Section::LitellmParams => keys::LITELLM_PARAMS,
            Section::ModelInfo => keys::MODEL_INFO,
            Section::RouterSettings => keys::ROUTER_SETTINGS,
            Section::LitellmSettings => keys::LITELLM_SETTINGS,
            Section::GeneralSettings => keys::GENERAL_SETTINGS,
        }
    }

    pub fn status(self, key: &str) -> Option<Status> {
        self.keys().iter().find(|(name, _)| *name == key).map(|(_, status)| *status)
    }

    /// `section.key`, or `key` at the top level.
    fn field(self, key: &str) -> String {
        match self {
            Section::TopLevel => key.to_owned(),
            _ => format!("{}.{key}", self.name()),
        }
    }
}

/// A LiteLLM setting the file sets and Tollgate does not act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// `router_settings.redis_host`, `model_list[].litellm_params.max_retries`.
    pub field: String,
    /// For a deployment's setting, the `model_name`s that set it.
    pub models: Vec<String>,
    pub instead: &'static str,
}

/// Model names shown in a report; the rest are counted.
const SHOWN_MODELS: usize = 5;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.field)?;
        if !self.models.is_empty() {
            let shown: Vec<&str> = self.models.iter().take(SHOWN_MODELS).map(String::as_str).collect();
            write!(f, " ({}", shown.join(", "))?;
            if self.models.len() > SHOWN_MODELS {
                write!(f, " and {} more", self.models.len() - SHOWN_MODELS)?;
            }
            f.write_str(")")?;
        }
        write!(f, " is not supported: {}", self.instead)
    }
}

/// The LiteLLM-only keys of one section as they were set aside, with where the section is.
struct SetAside<'a> {
    section: Section,
    /// The deployment's position in `model_list`, for its `litellm_params`.
    model: Option<usize>,
    keys: &'a BTreeMap<String, serde_yaml::Value>,
}

impl Config {
    fn set_aside(&self) -> Vec<SetAside<'_>> {
        let mut out = vec![SetAside { section: Section::TopLevel, model: None, keys: &self.litellm_only }];
        for (i, m) in self.model_list.iter().enumerate() {
            out.push(SetAside {
                section: Section::LitellmParams,
                model: Some(i),
                keys: &m.litellm_params.litellm_only,
            });
        }
        out.push(SetAside { section: Section::RouterSettings, model: None, keys: &self.router_settings.litellm_only });
        out.push(SetAside {
            section: Section::LitellmSettings,
            model: None,
            keys: &self.litellm_settings.litellm_only,
        });
        if let Some(general) = &self.general_settings {
            out.push(SetAside { section: Section::GeneralSettings, model: None, keys: &general.litellm_only });
        }
        out
    }

    /// Every key set aside is one LiteLLM has and Tollgate accepts; any other is an error
    /// naming the field, its line in `text` (the file) and the known key it is closest to.
    pub(super) fn check_litellm_keys(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        for aside in self.set_aside() {
            // A key Tollgate acts on is a typed field and never set aside.
            if let Some(key) = aside.keys.keys().find(|k| !matches!(aside.section.status(k), Some(Status::Ignored(_))))
            {
                return Err(unknown_field(text, origin, &aside, key));
            }
        }
        Ok(())
    }

    /// The LiteLLM settings of this file that Tollgate accepts and does not act on, each named
    /// once, with what to use instead: warned about at start-up, listed by `--check-config`,
    /// refused by `--strict`.
    pub fn unsupported(&self) -> Vec<Unsupported> {
        let mut out: Vec<Unsupported> = Vec::new();
        let mut note = |section: Section, key: &str, model: Option<&str>| {
            let Some(Status::Ignored(instead)) = section.status(key) else { return };
            let field = section.field(key);
            let entry = match out.iter().position(|u| u.field == field) {
                Some(i) => &mut out[i],
                None => {
                    out.push(Unsupported { field, models: Vec::new(), instead });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            if let Some(model) = model.filter(|m| !entry.models.iter().any(|seen| seen == m)) {
                entry.models.push(model.to_owned());
            }
        };
        for aside in self.set_aside() {
            let model = aside.model.and_then(|i| self.model_list.get(i)).map(|m| m.model_name.as_str());
            for key in aside.keys.keys() {
                note(aside.section, key, model);
            }
            if let Some(m) = aside.model.and_then(|i| self.model_list.get(i)) {
                for key in m.model_info.iter().flat_map(|info| info.keys()) {
                    note(Section::ModelInfo, key, model);
                }
            }
        }
        out
    }
}

/// The error for `key`, set aside in `aside` and known to no table.
fn unknown_field(text: &str, origin: &str, aside: &SetAside<'_>, key: &str) -> ConfigError {
    let (field, mut path) = match (aside.section, aside.model) {
        (Section::LitellmParams, Some(i)) => (
            format!("model_list[{i}].litellm_params.{key}"),
            vec![Step::Key("model_list"), Step::Index(i), Step::Key("litellm_params")],
        ),
        (section, _) => (section.field(key), vec![Step::Key(section.name())]),
    };
    if aside.section == Section::TopLevel {
        path.clear();
    }
    path.push(Step::Key(key));
    let location = tollgate_schemas::yaml::locate(text, &path)
        .map(|at| format!(", line {} column {}", at.line(), at.column()))
        .unwrap_or_default();
    let hint = match closest(key, aside.section.keys().iter().map(|(name, _)| *name)) {
        Some(known) => format!("did you mean `{known}`?"),
        None => format!("neither Tollgate nor LiteLLM has this setting in {}", where_in(aside.section)),
    };
    ConfigError::UnknownField { path: origin.to_owned(), location, field, hint }
}

fn where_in(section: Section) -> &'static str {
    match section {
        Section::TopLevel => "the top level",
        other => other.name(),
    }
}

/// The known name closest to `key` in edits, when it is close enough to be a typo of it.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    let allowed = (key.chars().count() / 3).clamp(1, 3);
    known
        .map(|name| (edits(&key, &name.to_ascii_lowercase()), name))
        .filter(|(d, _)| *d <= allowed)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance: insertions, deletions and substitutions.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
