//! Request bodies of the admin API: every field is taken by name, converted to its type and held
//! to its bounds; what is left over is an unknown field. Reads the body only: nothing here looks
//! at the store.

use crate::error::GatewayError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tollgate_schemas::limits;
use tollgate_schemas::money::ParseUsdError;
use tollgate_schemas::tenancy::{BadDuration, BudgetDuration, Limits};
use tollgate_schemas::NanoUsd;

/// Why the value of a field was refused. Shown after the field's name, as in
/// "`max_budget` cannot be negative".
#[derive(Debug, thiserror::Error)]
pub(crate) enum FieldError {
    /// The value has the wrong type or shape.
    #[error("must be {0}")]
    Expected(&'static str),
    #[error("cannot be negative")]
    Negative,
    #[error("{0}")]
    Amount(#[from] ParseUsdError),
    #[error("is invalid: {0}")]
    Duration(#[from] BadDuration),
    #[error("values must be 1 to 100")]
    Percentage,
    /// The entry `key` of an object keyed by model name.
    #[error("[{key}] {error}")]
    Entry { key: String, error: Box<FieldError> },
    /// A team member that is not one, said whole ("each member needs a `user_id`").
    #[error("{0}")]
    Member(&'static str),
    #[error("unknown member field `{0}`")]
    MemberField(String),
}

impl FieldError {
    /// The 400 naming the field `name` at fault.
    fn at(self, name: &str) -> GatewayError {
        GatewayError::field(name, format!("`{name}` {self}"))
    }
}

/// The fields of a request body, taken one by one.
pub(crate) struct Fields(Map<String, Value>);

/// A field that may be absent (`None`), null (`Some(None)`: clear it) or set.
pub(crate) type Nullable<T> = Option<Option<T>>;

impl Fields {
    pub(crate) fn parse(body: &[u8]) -> Result<Fields, GatewayError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(Map::new()));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(GatewayError::invalid("the request body must be a JSON object", None)),
            Err(e) => Err(GatewayError::invalid(format!("request body is not valid JSON: {e}"), None)),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    pub(crate) fn nullable<T>(
        &mut self,
        name: &str,
        convert: impl FnOnce(Value) -> Result<T, FieldError>,
    ) -> Result<Nullable<T>, GatewayError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => convert(v).map(|t| Some(Some(t))).map_err(|e| e.at(name)),
        }
    }

    /// Free text (an alias, an email): 1 to 256 bytes without control characters.
    pub(crate) fn string(&mut self, name: &str) -> Result<Nullable<String>, GatewayError> {
        let value = self.nullable(name, |v| match v {
            Value::String(s) => Ok(s),
            _ => Err(FieldError::Expected("a non-empty string of at most 256 bytes")),
        })?;
        if let Some(Some(v)) = &value {
            limits::check_name(name, v, limits::MAX_NAME_BYTES).map_err(bounded)?;
        }
        Ok(value)
    }

    pub(crate) fn required_string(&mut self, name: &str) -> Result<String, GatewayError> {
        self.string(name)?.flatten().ok_or_else(|| required(name))
    }

    /// An id that becomes part of a ledger scope (team, user, customer, organization, budget):
    /// see `tollgate_schemas::limits::check_id`.
    pub(crate) fn id(&mut self, name: &str) -> Result<Nullable<String>, GatewayError> {
        let value = self.string(name)?;
        if let Some(Some(v)) = &value {
            limits::check_id(name, v).map_err(bounded)?;
        }
        Ok(value)
    }

    pub(crate) fn required_id(&mut self, name: &str) -> Result<String, GatewayError> {
        self.id(name)?.flatten().ok_or_else(|| required(name))
    }

    /// A list of strings; null is the empty list.
    pub(crate) fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, GatewayError> {
        Ok(self
            .nullable(name, |v| {
                serde_json::from_value::<Vec<String>>(v).map_err(|_| FieldError::Expected("an array of strings"))
            })?
            .map(Option::unwrap_or_default))
    }

    /// Tags: at most 64 names of at most 128 bytes.
    pub(crate) fn tags(&mut self, name: &str) -> Result<Option<Vec<String>>, GatewayError> {
        let tags = self.strings(name)?;
        if let Some(t) = &tags {
            limits::check_tags(name, t).map_err(bounded)?;
        }
        Ok(tags)
    }

    pub(crate) fn bool(&mut self, name: &str) -> Result<Option<bool>, GatewayError> {
        Ok(self.nullable(name, |v| v.as_bool().ok_or(FieldError::Expected("true or false")))?.flatten())
    }

    pub(crate) fn count(&mut self, name: &str) -> Result<Nullable<u64>, GatewayError> {
        self.nullable(name, count)
    }

    pub(crate) fn usd(&mut self, name: &str) -> Result<Nullable<NanoUsd>, GatewayError> {
        self.nullable(name, usd)
    }

    pub(crate) fn duration(&mut self, name: &str) -> Result<Nullable<BudgetDuration>, GatewayError> {
        self.nullable(name, |v| match v {
            Value::String(s) => Ok(BudgetDuration::parse(&s)?),
            _ => Err(FieldError::Expected("a duration such as \"30d\"")),
        })
    }

    /// An object keyed by model name; null is the empty map.
    fn map<T>(
        &mut self,
        name: &str,
        each: impl Fn(Value) -> Result<T, FieldError>,
    ) -> Result<Option<BTreeMap<String, T>>, GatewayError> {
        Ok(self
            .nullable(name, |v| {
                let Value::Object(m) = v else { return Err(FieldError::Expected("an object keyed by model name")) };
                m.into_iter()
                    .map(|(key, v)| match each(v) {
                        Ok(t) => Ok((key, t)),
                        Err(error) => Err(FieldError::Entry { key, error: Box::new(error) }),
                    })
                    .collect()
            })?
            .map(Option::unwrap_or_default))
    }

    /// Free-form metadata: an object of at most `limits::MAX_METADATA_BYTES`; null is empty.
    pub(crate) fn metadata(&mut self, name: &str) -> Result<Option<Map<String, Value>>, GatewayError> {
        let metadata = self
            .nullable(name, |v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(FieldError::Expected("an object")),
            })?
            .map(Option::unwrap_or_default);
        if let Some(m) = &metadata {
            // Serialising a map of JSON values cannot fail; an error would only overestimate.
            let len = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
            if len > limits::MAX_METADATA_BYTES {
                return Err(GatewayError::field(
                    name,
                    format!("`{name}` is larger than {} bytes", limits::MAX_METADATA_BYTES),
                ));
            }
        }
        Ok(metadata)
    }

    /// Fails on the first field nobody took.
    pub(crate) fn finish(self) -> Result<(), GatewayError> {
        match self.0.keys().next() {
            Some(k) => Err(GatewayError::field(k.clone(), format!("unknown field `{k}`"))),
            None => Ok(()),
        }
    }
}

/// A missing field that must be given.
pub(crate) fn required(name: &str) -> GatewayError {
    GatewayError::field(name, format!("`{name}` is required"))
}

/// A broken bound as a 400 naming the field.
fn bounded(e: limits::BoundError) -> GatewayError {
    GatewayError::field(e.field().to_owned(), e.to_string())
}

fn count(v: Value) -> Result<u64, FieldError> {
    v.as_u64().ok_or(FieldError::Expected("a whole number, 0 or more"))
}

/// An amount of USD, given as a number or a string, read exactly.
fn usd(v: Value) -> Result<NanoUsd, FieldError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s,
        _ => return Err(FieldError::Expected("an amount of USD")),
    };
    let amount = NanoUsd::parse_usd(&text)?;
    if amount.0 < 0 {
        return Err(FieldError::Negative);
    }
    Ok(amount)
}

/// Alert thresholds: percentages of the budget, 1 to 100.
fn percentages(v: Value) -> Result<Vec<u8>, FieldError> {
    let list: Vec<u64> = serde_json::from_value(v).map_err(|_| FieldError::Expected("an array of percentages"))?;
    list.into_iter()
        .map(|p| u8::try_from(p).ok().filter(|p| (1..=100).contains(p)).ok_or(FieldError::Percentage))
        .collect()
}

/// Applies a field that was given (for a [`Nullable`] field, null clears the value).
pub(crate) fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

/// The limit fields every record accepts (LiteLLM names), applied to `limits`.
pub(crate) fn take_limits(f: &mut Fields, limits: &mut Limits) -> Result<(), GatewayError> {
    set(&mut limits.max_budget, f.usd("max_budget")?);
    set(&mut limits.soft_budget, f.usd("soft_budget")?);
    set(&mut limits.budget_duration, f.duration("budget_duration")?);
    set(&mut limits.tpm_limit, f.count("tpm_limit")?);
    set(&mut limits.rpm_limit, f.count("rpm_limit")?);
    if let Some(v) = f.count("max_parallel_requests")? {
        limits.max_parallel_requests = v
            .map(|n| u32::try_from(n).map_err(|_| GatewayError::field("max_parallel_requests", "too large")))
            .transpose()?;
    }
    if let Some(m) = f.map("model_max_budget", |v| {
        // LiteLLM also accepts {"gpt-4o": {"max_budget": 10}}.
        match v {
            Value::Object(mut o) => usd(o.remove("max_budget").unwrap_or(Value::Null)),
            other => usd(other),
        }
    })? {
        limits.model_max_budget = m;
    }
    if let Some(m) = f.map("model_rpm_limit", count)? {
        limits.model_rpm_limit = m;
    }
    if let Some(m) = f.map("model_tpm_limit", count)? {
        limits.model_tpm_limit = m;
    }
    if let Some(v) = f.nullable("alert_thresholds", percentages)? {
        limits.alert_thresholds = v.unwrap_or_default();
        limits.alert_thresholds.sort_unstable();
        limits.alert_thresholds.dedup();
    }
    set(&mut limits.budget_id, f.id("budget_id")?);
    if let (Some(soft), Some(max)) = (limits.soft_budget, limits.max_budget) {
        if soft > max {
            return Err(GatewayError::field("soft_budget", "`soft_budget` cannot be above `max_budget`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_the_bad_field() {
        let mut f = Fields::parse(br#"{"max_budget": -1}"#).unwrap();
        let err = take_limits(&mut f, &mut Limits::default()).err().unwrap();
        assert!(matches!(&err, GatewayError::InvalidField { field, .. } if field == "max_budget"), "{err:?}");
        assert_eq!(err.to_string(), "`max_budget` cannot be negative");

        let mut f = Fields::parse(br#"{"budget_duration": "3 weeks"}"#).unwrap();
        let err = take_limits(&mut f, &mut Limits::default()).err().unwrap();
        assert!(matches!(&err, GatewayError::InvalidField { field, .. } if field == "budget_duration"));

        let mut f = Fields::parse(br#"{"rpm_limit": 10, "colour": "red"}"#).unwrap();
        let mut limits = Limits::default();
        take_limits(&mut f, &mut limits).unwrap();
        assert_eq!(limits.rpm_limit, Some(10));
        let err = f.finish().err().unwrap();
        assert!(matches!(&err, GatewayError::InvalidField { field, .. } if field == "colour"));
    }

    #[test]
    fn a_bad_entry_of_a_model_map_is_named() {
        let mut f = Fields::parse(br#"{"model_rpm_limit": {"gpt-4o": -3}}"#).unwrap();
        let err = take_limits(&mut f, &mut Limits::default()).err().unwrap();
        assert_eq!(err.to_string(), "`model_rpm_limit` [gpt-4o] must be a whole number, 0 or more");
        let mut f = Fields::parse(br#"{"alert_thresholds": [50, 101]}"#).unwrap();
        let err = take_limits(&mut f, &mut Limits::default()).err().unwrap();
        assert_eq!(err.to_string(), "`alert_thresholds` values must be 1 to 100");
    }

    #[test]
    fn dollars_are_read_exactly_and_null_clears() {
        let mut f = Fields::parse(
            br#"{"max_budget": 0.1, "soft_budget": "0.05", "model_max_budget": {"m": {"max_budget": 2}}}"#,
        )
        .unwrap();
        let mut limits = Limits { tpm_limit: Some(5), ..Limits::default() };
        take_limits(&mut f, &mut limits).unwrap();
        assert_eq!(limits.max_budget, Some(NanoUsd(100_000_000)));
        assert_eq!(limits.soft_budget, Some(NanoUsd(50_000_000)));
        assert_eq!(limits.model_max_budget.get("m"), Some(&NanoUsd(2_000_000_000)));
        assert_eq!(limits.tpm_limit, Some(5), "absent fields are kept");
        let mut f = Fields::parse(br#"{"max_budget": null}"#).unwrap();
        take_limits(&mut f, &mut limits).unwrap();
        assert_eq!(limits.max_budget, None);
    }

    #[test]
    fn soft_budget_above_max_is_refused() {
        let mut f = Fields::parse(br#"{"max_budget": 1, "soft_budget": 2}"#).unwrap();
        assert!(take_limits(&mut f, &mut Limits::default()).is_err());
    }
}
