//! Loading a file: parse, then check every field and resolve secrets; errors name the field.

use super::*;

const TIMEOUT_RANGE: &str = "must be a number of seconds greater than 0 and at most 86400";

/// Most retries within one model group.
const MAX_RETRIES: u32 = 10;

/// Timeouts become `Duration`s, which cannot hold NaN, infinities or negative values.
pub(super) fn valid_timeout(secs: f64) -> bool {
    secs.is_finite() && secs > 0.0 && secs <= 86_400.0
}

/// Resolves `os.environ/VAR` from the config's `environment_variables`, then the process
/// environment.
fn resolve_secret(
    secret: &Secret,
    file_env: &HashMap<String, Secret>,
    path: &str,
    field: &str,
) -> Result<Secret, ConfigError> {
    secret.resolve(file_env).map_err(|unset| ConfigError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        message: unset.to_string(),
    })
}

/// A deployment's `api_key`, AWS credentials and `vertex_credentials`, and its `api_base`,
/// `api_version`, AWS region, Bedrock endpoint, `vertex_project` and `vertex_location` when they
/// are `os.environ/VAR` (LiteLLM reads any of its parameters so).
fn resolve_params(
    params: &mut LitellmParams,
    file_env: &HashMap<String, Secret>,
    origin: &str,
    index: usize,
) -> Result<(), ConfigError> {
    let field = |name: &str| format!("model_list[{index}].litellm_params.{name}");
    if let Some(key) = &params.api_key {
        params.api_key = Some(resolve_secret(key, file_env, origin, &field("api_key"))?);
    }
    for (name, secret) in [
        ("aws_access_key_id", &mut params.aws_access_key_id),
        ("aws_secret_access_key", &mut params.aws_secret_access_key),
        ("aws_session_token", &mut params.aws_session_token),
    ] {
        if let Some(value) = secret.as_ref() {
            *secret = Some(resolve_secret(value, file_env, origin, &field(name))?);
        }
    }
    if let Some(credentials) = &params.vertex_credentials {
        params.vertex_credentials = Some(resolve_secret(credentials, file_env, origin, &field("vertex_credentials"))?);
    }
    for (name, value) in [
        ("api_base", &mut params.api_base),
        ("api_version", &mut params.api_version),
        ("aws_region_name", &mut params.aws_region_name),
        ("aws_bedrock_runtime_endpoint", &mut params.aws_bedrock_runtime_endpoint),
        ("vertex_project", &mut params.vertex_project),
        ("vertex_location", &mut params.vertex_location),
    ] {
        if let Some(text) = value.as_mut().filter(|v| v.starts_with("os.environ/")) {
            *text = resolve_secret(&Secret::new(text.as_str()), file_env, origin, &field(name))?.expose().to_owned();
        }
    }
    Ok(())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
        Config::parse(&text, &display)
    }

    /// Parses and validates; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = tollgate_schemas::yaml::from_str(text)
            .map_err(|source| ConfigError::Parse { path: origin.to_owned(), source })?;
        config.check_litellm_keys(text, origin)?;
        config.validate_and_resolve(origin)?;
        Ok(config)
    }

    fn validate_and_resolve(&mut self, origin: &str) -> Result<(), ConfigError> {
        self.check_sinks(origin)?;
        self.check_gateway(origin)?;
        self.check_keys_and_prices(origin)?;
        self.check_models(origin)?;
        self.check_router(origin)?;
        let set = crate::guardrails::config::build(&self.guardrails, &self.environment_variables, origin)?;
        self.guardrail_set = std::sync::Arc::new(set);
        self.check_cache(origin)
    }

    /// `litellm_settings.cache_params` is within its bounds.
    /// Its Redis address and password are resolved (`os.environ/VAR`).
    fn check_cache(&mut self, origin: &str) -> Result<(), ConfigError> {
        let Some(params) = &mut self.litellm_settings.cache_params else { return Ok(()) };
        let env = &self.environment_variables;
        for (name, secret) in [
            ("host", &mut params.host),
            ("port", &mut params.port),
            ("username", &mut params.username),
            ("password", &mut params.password),
            ("url", &mut params.url),
            ("ssl", &mut params.ssl),
        ] {
            if let Some(s) = secret {
                *s = resolve_secret(s, env, origin, &format!("litellm_settings.cache_params.{name}"))?;
            }
        }
        params.check().map_err(|(field, message)| ConfigError::Invalid {
            path: origin.to_owned(),
            field: format!("litellm_settings.cache_params.{field}"),
            message,
        })
    }

    /// The model list is not empty; the usage sink (Kafka and a database, or embedded) and its
    /// spool are well formed; event names are within bounds.
    fn check_sinks(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if self.model_list.is_empty() {
            return Err(invalid("model_list".into(), "at least one model is required".into()));
        }
        if self.spool.queue_capacity < 10 {
            return Err(invalid("spool.queue_capacity".into(), "must be at least 10".into()));
        }
        if self.spool.max_segment_bytes < 4096 {
            return Err(invalid("spool.max_segment_bytes".into(), "must be at least 4096".into()));
        }
        if let Some(k) = &self.kafka {
            k.usage_generations().map_err(|(field, message)| invalid(field.into(), message))?;
        }
        match (&self.kafka, &self.embedded) {
            (Some(k), None) if k.max_queued_messages == 0 => {
                return Err(invalid("kafka.max_queued_messages".into(), "must be positive".into()));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "embedded".into(),
                    "use either `kafka` (with `database`) or `embedded`, not both".into(),
                ));
            }
            (None, _) if self.database.is_some() => {
                return Err(invalid(
                    "database".into(),
                    "`database` needs `kafka` (without both, Tollgate runs embedded)".into(),
                ));
            }
            _ => {}
        }
        if self.gateway.replicas == 0 {
            return Err(invalid("gateway.replicas".into(), "must be at least 1".into()));
        }
        self.check_event_names(origin)?;
        if let Some(db) = &mut self.database {
            if let Some(p) = &db.password {
                db.password = Some(resolve_secret(p, &self.environment_variables, origin, "database.password")?);
            }
            if let Err((field, message)) = db.connection().validate() {
                return Err(invalid(format!("database.{field}"), message));
            }
            if let Err(e) = tollgate_schemas::cql::validate_keyspace(&db.keyspace) {
                return Err(invalid("database.keyspace".into(), e.to_string()));
            }
        }
        Ok(())
    }

    /// `gateway.*`: timeouts and sizes within range, the metrics listener and token, the key
    /// hash secret.
    fn check_gateway(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if !(1..=3_600).contains(&self.gateway.shutdown_timeout_secs) {
            return Err(invalid("gateway.shutdown_timeout_secs".into(), "must be 1 to 3600 seconds".into()));
        }
        if !(1..=3_600).contains(&self.gateway.flush_timeout_secs) {
            return Err(invalid("gateway.flush_timeout_secs".into(), "must be 1 to 3600 seconds".into()));
        }
        if let Some((field, message)) = self.gateway.console.out_of_range() {
            return Err(invalid(field.into(), message.into()));
        }
        let metrics = self.gateway.metrics.listen.as_deref();
        if let Some((field, message)) = self.gateway.admin.out_of_range(&self.gateway.listen, metrics) {
            return Err(invalid(field.into(), message.into()));
        }
        if self.gateway.max_body_bytes == 0 {
            return Err(invalid("gateway.max_body_bytes".into(), "must be positive".into()));
        }
        if self.gateway.max_upload_bytes == 0 {
            return Err(invalid("gateway.max_upload_bytes".into(), "must be positive".into()));
        }
        let batches = &self.gateway.batches;
        if !(1..=1024 * 1024 * 1024).contains(&batches.max_file_bytes) {
            return Err(invalid("gateway.batches.max_file_bytes".into(), "must be 1 byte to 1 GiB".into()));
        }
        if !(1..=50_000).contains(&batches.max_lines) {
            return Err(invalid("gateway.batches.max_lines".into(), "must be 1 to 50000 (OpenAI's bound)".into()));
        }
        if batches.poll_interval_secs > 86_400 {
            return Err(invalid("gateway.batches.poll_interval_secs".into(), "must be 0 to 86400 seconds".into()));
        }
        if self.gateway.max_response_bytes == 0 {
            return Err(invalid("gateway.max_response_bytes".into(), "must be positive".into()));
        }
        if !valid_timeout(self.gateway.request_timeout_secs) {
            return Err(invalid("gateway.request_timeout_secs".into(), TIMEOUT_RANGE.into()));
        }
        if !(1..=3_600).contains(&self.gateway.keep_alive_secs) {
            return Err(invalid("gateway.keep_alive_secs".into(), "must be between 1 and 3600 seconds".into()));
        }
        if !(1..=3_600_000).contains(&self.gateway.client_request_timeout_ms) {
            return Err(invalid(
                "gateway.client_request_timeout_ms".into(),
                "must be between 1 and 3600000 milliseconds".into(),
            ));
        }
        if let Some(token) = &self.gateway.metrics.token {
            let token = resolve_secret(token, &self.environment_variables, origin, "gateway.metrics.token")?;
            if token.expose().len() < 16 {
                return Err(invalid("gateway.metrics.token".into(), "must be at least 16 characters".into()));
            }
            self.gateway.metrics.token = Some(token);
        }
        if self.litellm_settings.wants_prometheus() {
            self.gateway.metrics.litellm_compatible = true;
        }
        if !(1..=super::billing::MAX_LABEL_CAP).contains(&self.gateway.metrics.labels.cap) {
            return Err(invalid("gateway.metrics.labels.cap".into(), "must be 1 to 10000".into()));
        }
        if let Some(listen) = &self.gateway.metrics.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "gateway.metrics.listen".into(),
                    "must be an address such as 127.0.0.1:9464".into(),
                ));
            }
        }
        if let Some(secret) = &self.gateway.batches.id_secret {
            let field = "gateway.batches.id_secret";
            let secret = resolve_secret(secret, &self.environment_variables, origin, field)?;
            if secret.expose().len() < crate::batches::ids::MIN_SECRET_BYTES {
                return Err(invalid(
                    field.into(),
                    format!("must be at least {} bytes", crate::batches::ids::MIN_SECRET_BYTES),
                ));
            }
            self.gateway.batches.id_secret = Some(secret);
        }
        if let Some(secret) = &self.gateway.key_hash_secret {
            if self.gateway.key_hash_secret_file.is_some() {
                return Err(invalid(
                    "gateway.key_hash_secret_file".into(),
                    "give `key_hash_secret` or this, not both".into(),
                ));
            }
            let secret = resolve_secret(secret, &self.environment_variables, origin, "gateway.key_hash_secret")?;
            if secret.expose().len() < crate::tenancy::auth::MIN_KEY_HASH_SECRET {
                return Err(invalid(
                    "gateway.key_hash_secret".into(),
                    format!("must be at least {} bytes", crate::tenancy::auth::MIN_KEY_HASH_SECRET),
                ));
            }
            self.gateway.key_hash_secret = Some(secret);
        }
        Ok(())
    }

    /// Secrets of Kafka's properties and of the master key resolved; config-file virtual keys
    /// given one way; prices within bounds.
    fn check_keys_and_prices(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if let Some(kafka) = &mut self.kafka {
            for (section, properties) in [
                ("client_properties", &mut kafka.client_properties),
                ("producer_properties", &mut kafka.producer_properties),
            ] {
                for (name, value) in properties.iter_mut() {
                    *value =
                        resolve_secret(value, &self.environment_variables, origin, &format!("kafka.{section}.{name}"))?;
                }
            }
        }
        if let Some(general) = &mut self.general_settings {
            if let Some(key) = &general.master_key {
                general.master_key =
                    Some(resolve_secret(key, &self.environment_variables, origin, "general_settings.master_key")?);
            }
        }
        for (i, k) in self.virtual_keys.iter_mut().enumerate() {
            match (&k.key, &k.key_hash) {
                (Some(key), None) => {
                    k.key = Some(resolve_secret(
                        key,
                        &self.environment_variables,
                        origin,
                        &format!("virtual_keys[{i}].key"),
                    )?);
                }
                (None, Some(hash)) if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {}
                (None, Some(_)) => {
                    return Err(invalid(
                        format!("virtual_keys[{i}].key_hash"),
                        "must be 64 hex characters (SHA-256)".into(),
                    ))
                }
                _ => {
                    return Err(invalid(format!("virtual_keys[{i}]"), "give exactly one of `key` or `key_hash`".into()))
                }
            }
        }
        for (name, p) in &self.prices {
            let cached = p.cached_input_nano_usd_per_token.unwrap_or(0);
            if p.input_nano_usd_per_token < 0 || p.output_nano_usd_per_token < 0 || cached < 0 {
                return Err(invalid(format!("prices.{name}"), "prices must not be negative".into()));
            }
            let max = tollgate_schemas::limits::MAX_PRICE_PER_TOKEN.0;
            if p.input_nano_usd_per_token > max || p.output_nano_usd_per_token > max || cached > max {
                return Err(invalid(format!("prices.{name}"), format!("at most {max} nano-USD per token")));
            }
        }
        Ok(())
    }

    /// `model_list`: provider prefixes, timeouts, weights and limits; provider keys resolved.
    fn check_models(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        for (i, m) in self.model_list.iter_mut().enumerate() {
            let params = &mut m.litellm_params;
            if let Some(provider) = params.custom_llm_provider.take() {
                if !params.model.starts_with(&format!("{provider}/")) {
                    params.model = format!("{provider}/{}", params.model);
                }
            }
            if !params.model.contains('/') {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params.model"),
                    format!(
                        "expected `provider/model` (or `custom_llm_provider`), got `{}`; Tollgate does not guess a \
                         provider from a model's name (for a wildcard write `openai/*`, `anthropic/*`, ...)",
                        params.model
                    ),
                ));
            }
            let stars = |s: &str| s.matches('*').count();
            if stars(&m.model_name) > 1 || stars(&params.model) > 1 {
                return Err(invalid(
                    format!("model_list[{i}]"),
                    "a wildcard `model_name` or `litellm_params.model` holds one `*` (`openai/*`)".into(),
                ));
            }
            if stars(&params.model) == 1 && stars(&m.model_name) == 0 {
                return Err(invalid(
                    format!("model_list[{i}].model_name"),
                    format!(
                        "`litellm_params.model` `{}` is a wildcard, so `model_name` must be one too (`{}`)",
                        params.model, params.model
                    ),
                ));
            }
            if params.model.split_once('/').is_some_and(|(provider, _)| provider.contains('*')) {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params.model"),
                    "the provider prefix cannot be a wildcard: write one entry per provider (`openai/*`, `anthropic/*`)"
                        .into(),
                ));
            }
            if let Some(t) = params.timeout {
                if !valid_timeout(t) {
                    return Err(invalid(format!("model_list[{i}].litellm_params.timeout"), TIMEOUT_RANGE.into()));
                }
            }
            if let Some(t) = params.stream_timeout {
                if !valid_timeout(t) {
                    return Err(invalid(
                        format!("model_list[{i}].litellm_params.stream_timeout"),
                        TIMEOUT_RANGE.into(),
                    ));
                }
            }
            if params.stream_max_duration.is_some_and(|t| !valid_timeout(t)) {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params.stream_max_duration"),
                    TIMEOUT_RANGE.into(),
                ));
            }
            if params.weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
                return Err(invalid(format!("model_list[{i}].litellm_params.weight"), "must be positive".into()));
            }
            if params.rpm == Some(0) || params.tpm == Some(0) {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params"),
                    "rpm and tpm must be positive when given".into(),
                ));
            }
            resolve_params(params, &self.environment_variables, origin, i)?;
        }
        Ok(())
    }

    /// `litellm_settings`' router settings are checked, then fill what `router_settings` leaves
    /// unset (LiteLLM's precedence); then `router_settings`: fallbacks and aliases name configured
    /// models, timeouts, cooldowns and retries are within range.
    fn check_router(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        let ls = &self.litellm_settings;
        self.check_fallbacks(origin, "litellm_settings", &ls.fallbacks_by_kind(), &ls.default_fallbacks)?;
        let rs = &self.router_settings;
        for (field, t) in [
            ("litellm_settings.request_timeout", ls.request_timeout),
            ("router_settings.timeout", rs.timeout),
            ("router_settings.request_timeout", rs.request_timeout),
            ("router_settings.stream_timeout", rs.stream_timeout),
            ("router_settings.stream_max_duration", rs.stream_max_duration),
        ] {
            if t.is_some_and(|t| !valid_timeout(t)) {
                return Err(invalid(field.into(), TIMEOUT_RANGE.into()));
            }
        }
        for (field, retries) in
            [("litellm_settings.num_retries", ls.num_retries), ("router_settings.num_retries", rs.num_retries)]
        {
            if retries.is_some_and(|n| n > MAX_RETRIES) {
                return Err(invalid(field.into(), format!("at most {MAX_RETRIES}")));
            }
        }
        self.adopt_litellm_settings();
        let rs = &self.router_settings;
        self.check_fallbacks(origin, "router_settings", &rs.fallbacks_by_kind(), &rs.default_fallbacks)?;
        if !(rs.cooldown_time.is_finite() && (0.0..=86_400.0).contains(&rs.cooldown_time)) {
            return Err(invalid("router_settings.cooldown_time".into(), "must be between 0 and 86400 seconds".into()));
        }
        if !(rs.retry_after.is_finite() && (0.0..=600.0).contains(&rs.retry_after)) {
            return Err(invalid("router_settings.retry_after".into(), "must be between 0 and 600 seconds".into()));
        }
        self.check_aliases(origin)
    }

    /// `litellm_settings`' router settings where `router_settings` has none: LiteLLM's router
    /// takes its own argument first, then the module-wide setting.
    fn adopt_litellm_settings(&mut self) {
        let ls = &self.litellm_settings;
        let rs = &mut self.router_settings;
        rs.timeout = rs.timeout.or(rs.request_timeout).or(ls.request_timeout);
        rs.num_retries = rs.num_retries.or(ls.num_retries);
        rs.allowed_fails = rs.allowed_fails.or(ls.allowed_fails);
        for (mine, theirs) in [
            (&mut rs.fallbacks, &ls.fallbacks),
            (&mut rs.context_window_fallbacks, &ls.context_window_fallbacks),
            (&mut rs.content_policy_fallbacks, &ls.content_policy_fallbacks),
        ] {
            if mine.is_empty() {
                mine.clone_from(theirs);
            }
        }
        if rs.default_fallbacks.is_empty() {
            rs.default_fallbacks.clone_from(&ls.default_fallbacks);
        }
    }

    /// Whether `name` is a `model_name`, or a name a wildcard `model_name` serves.
    fn serves(&self, name: &str) -> bool {
        self.model_list.iter().any(|m| match m.model_name.split_once('*') {
            None => m.model_name == name,
            Some((prefix, suffix)) => {
                name.len() > prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix)
            }
        })
    }

    /// Every model a fallback list of `section` names is served (or `*`).
    fn check_fallbacks(
        &self,
        origin: &str,
        section: &str,
        lists: &[(&str, &FallbackList)],
        default: &[String],
    ) -> Result<(), ConfigError> {
        let unknown = |field: String, name: &str| ConfigError::Invalid {
            path: origin.to_owned(),
            field,
            message: format!("`{name}` is not a model_name of model_list, nor served by a wildcard one"),
        };
        for (field, list) in lists {
            for (j, entry) in list.iter().enumerate() {
                for (from, to) in entry {
                    if let Some(name) = std::iter::once(from).chain(to).find(|n| !self.serves(n) && *n != "*") {
                        return Err(unknown(format!("{section}.{field}[{j}]"), name));
                    }
                }
            }
        }
        match default.iter().find(|n| !self.serves(n)) {
            Some(name) => Err(unknown(format!("{section}.default_fallbacks"), name)),
            None => Ok(()),
        }
    }

    /// `model_group_alias`: each alias a new, bounded name for a configured model group.
    fn check_aliases(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        let names: std::collections::HashSet<&str> = self.model_list.iter().map(|m| m.model_name.as_str()).collect();
        for (alias, target) in &self.router_settings.model_group_alias {
            let field = format!("router_settings.model_group_alias.{alias}");
            tollgate_schemas::limits::check_name(&field, alias, tollgate_schemas::limits::MAX_NAME_BYTES)
                .map_err(|e| invalid(field.clone(), e.to_string()))?;
            if names.contains(alias.as_str()) {
                return Err(invalid(field, format!("`{alias}` is a model_name already; an alias must be a new name")));
            }
            if !self.serves(target.group()) {
                return Err(invalid(
                    field,
                    format!("`{}` is not a model_name of model_list, nor served by a wildcard one", target.group()),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Names and ids of this file that go into every usage event (the gateway id, a key's alias,
    /// team, user and organization, model names and the deployment id made of
    /// `litellm_params.model`) within the bounds the ledger holds events to
    /// (`limits::check_event`): one outside them would have every event that carries it refused
    /// and its requests left unbilled.
    fn check_event_names(&self, origin: &str) -> Result<(), ConfigError> {
        use tollgate_schemas::limits::{check_id, check_name, BoundError, MAX_NAME_BYTES};
        let invalid = |e: BoundError| ConfigError::Invalid {
            path: origin.to_owned(),
            field: e.field().to_owned(),
            message: e.to_string().replace(&format!("`{}` ", e.field()), ""),
        };
        let name = |field: String, value: &str| check_name(&field, value, MAX_NAME_BYTES).map_err(invalid);
        let id = |field: String, value: &Option<String>| {
            value.as_deref().map_or(Ok(()), |v| check_id(&field, v).map_err(invalid))
        };
        if let Some(gateway_id) = &self.gateway.id {
            name("gateway.id".into(), gateway_id)?;
        }
        for (i, m) in self.model_list.iter().enumerate() {
            name(format!("model_list[{i}].model_name"), &m.model_name)?;
            name(format!("model_list[{i}].litellm_params.model"), &m.litellm_params.model)?;
        }
        for (i, k) in self.virtual_keys.iter().enumerate() {
            if let Some(alias) = &k.key_alias {
                name(format!("virtual_keys[{i}].key_alias"), alias)?;
            }
            id(format!("virtual_keys[{i}].team_id"), &k.team_id)?;
            id(format!("virtual_keys[{i}].user_id"), &k.user_id)?;
            id(format!("virtual_keys[{i}].organization_id"), &k.organization_id)?;
        }
        Ok(())
    }
}
