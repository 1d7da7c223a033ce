//! The keys of LiteLLM's proxy config, section by section, and what Tollgate does with each:
//! acts on it (`Honoured`: a typed field of its section) or accepts it and reports it
//! (`Ignored`, saying what to use instead). A key of none of these tables is an error. The
//! tables are the only list: the loader, the start-up warnings, `--check-config` and the tables
//! of docs/litellm-migration.md (checked by a test) all read them.
//!
//! Sources: LiteLLM's `docs/proxy/config_settings.md`, and the fields of its router and
//! deployment types for keys the page shows in examples only.

use Status::{Honoured, Ignored};

/// What Tollgate does with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Acted on; the text says how.
    Honoured(&'static str),
    /// Accepted and named at start-up and by `--check-config`; the text says what to use
    /// instead.
    Ignored(&'static str),
}

// What to use instead, shared by keys of one family.

const SHARED_STATE: &str = "gateways share no state on the request path: rpm/tpm limits are split between \
                            replicas (`gateway.replicas`), budgets hold through credit leases and Kafka push-back";
const PRE_CALL_CHECKS: &str = "a prompt longer than a deployment's context window (`model_info.max_input_tokens`) \
                               skips it, and goes to `context_window_fallbacks` when none fits";
const NO_CACHE: &str =
    "the response cache is set by `litellm_settings.cache` and `cache_params` (chat completions only)";
const CALLBACKS: &str = "each request's usage event goes to the Kafka usage topic (the embedded ledger without \
                         Kafka) and metrics are on /metrics; feed logging and observability tools from those";
const CALLBACKS_HONOURED: &str = "`otel` and `langfuse` export request spans over OTLP (Langfuse's OTLP endpoint \
                                  with LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY); `prometheus` adds LiteLLM's metric \
                                  names to /metrics (`gateway.metrics.litellm_compatible`); other names are reported at \
                                  start-up, and every request's usage event goes to the Kafka usage topic";
const NO_MESSAGE_LOGS: &str = "Tollgate never logs or stores prompts and answers";
const LOGGING: &str = "set the log level with TOLLGATE_LOG and JSON logs with TOLLGATE_LOG_FORMAT=json";
const GUARDRAILS: &str = "write guardrails in the top-level `guardrails:` list (docs/guardrails.md)";
const ALERTING: &str = "budget alerts are POSTed by the ledger consumer to `budgets.webhook_url` (docs/limits.md); \
                        watch slow or failing providers through /metrics";
const DATABASE: &str = "keys, teams and spend live in Cassandra/ScyllaDB (`database:` with `kafka:`) or in the \
                        embedded SQLite file (`embedded:`); see docs/litellm-migration.md";
const MODELS_FROM_FILE: &str = "models come from `model_list` only; the admin API does not add models";
const METERED_ALWAYS: &str = "every request is metered exactly once, through the spool and the usage topic; \
                              this cannot be turned off";
const BUDGET_WINDOWS: &str = "budget windows (`budget_duration`) roll over by date; there is no reset job to tune";
const HEALTH: &str = "Tollgate does not probe providers: failing deployments are cooled down (`allowed_fails`, \
                      `cooldown_time`); /health and /health/readiness report the gateway";
const AUTH: &str = "only virtual keys and the master key authenticate; put SSO or JWT checks in front of Tollgate";
const SECRETS: &str = "secrets come from the environment (`os.environ/VAR`) or mounted files; there is no secret \
                       manager client";
const ROUTE_ACCESS: &str = "route access is fixed (model routes for keys, admin routes for admins); restrict \
                            networks in front of Tollgate";
const NO_UI: &str = "Tollgate has no admin UI; use the admin API";
const PER_ENTITY_LIMITS: &str = "set limits and budgets on each key, team, user, customer or organization through \
                                 the admin API";
const NAME_THE_MODEL: &str = "requests must name their model";
const PASS_THROUGH: &str = "pass-through endpoints are not served; use the OpenAI or Anthropic routes";
const NO_FORWARDED_HEADERS: &str = "client headers are not forwarded to providers";
const CLIENT_CREDENTIALS: &str = "clients cannot supply provider keys or api_base";
const CUSTOM_CODE: &str = "Tollgate loads no custom Python code";
const PARALLEL: &str = "there is no per-deployment or proxy-wide concurrency cap: set `max_parallel_requests` on \
                        keys and `rpm`/`tpm` on deployments";
const DEFAULT_PARAMS: &str = "no request parameters are added: clients send them";
const PASSED_UNCHANGED: &str = "request parameters go to the provider as sent; one it refuses is answered 400";
const PROVIDER_TWEAKS: &str = "Tollgate does no provider-specific rewriting of this kind";
const TAGS: &str = "give deployments of each tag a model_name of their own";
const MCP: &str = "MCP is not served";
const PROMPTS: &str = "clients send their prompts; Tollgate stores none";
const SCHEDULER: &str = "requests are served as they come, without priorities";
const CLOUD_AUTH: &str = "SageMaker and watsonx are not providers of Tollgate yet: reach such models \
                          through an OpenAI-compatible endpoint (`api_base`, `api_key`); a `bedrock/` deployment \
                          names its region in `aws_region_name`";
const AWS_STATIC_KEYS: &str = "a `bedrock/` deployment signs with static keys (`aws_access_key_id`, \
                               `aws_secret_access_key`, `aws_session_token`): profiles, roles, web identity and STS \
                               are not read";
const AWS_SIGNING: &str = "a `bedrock/` deployment's static AWS credentials: its requests are signed with SigV4 \
                           (`os.environ/VAR` allowed)";
const ENTRA_ID: &str = "give the Azure deployment's `api_key` (no Entra ID sign-in)";
const PRICE_PER_TOKEN: &str = "Tollgate prices tokens (text, cache, reasoning, audio, image), context tiers and \
                               requests; not this unit (docs/design.md, \"Prices\")";
const ROUTER_RETRIES: &str = "retries are the router's: `router_settings.num_retries`";
const NO_PROVIDER_BUDGETS: &str = "budget keys, teams, users, customers or organizations; providers and \
                                   deployments have no budgets";
const NOT_SERVED_FILES: &str = "files and batches go to the deployments of `model_list` (docs/design.md §2.13); \
                                fine-tuning is not served";
const PRICE_SERVED: &str = "the price in USD, converted exactly to atto-USD; overrides the model catalogue";
const SERVED: &str = "served by /model/info as written";
const LITELLM_FIRST: &str = "used when `router_settings` does not set it";

/// The top level of the file: LiteLLM's sections, and Tollgate's own.
pub(super) const TOP_LEVEL: &[(&str, Status)] = &[
    ("model_list", Honoured("the deployments, by `model_name`")),
    ("router_settings", Honoured("routing, retries, fallbacks, cooldowns, timeouts")),
    ("litellm_settings", Honoured("the request timeout, retries and fallbacks of the router")),
    ("general_settings", Honoured("`master_key`, `reject_clientside_metadata_tags`")),
    (
        "environment_variables",
        Honoured("resolve `os.environ/VAR` in this file before the process environment; not exported"),
    ),
    ("gateway", Honoured("Tollgate's own: listener, bounds, timeouts, metrics")),
    ("virtual_keys", Honoured("Tollgate's own: keys defined in the file")),
    ("prices", Honoured("Tollgate's own: prices in nano-USD per token")),
    ("kafka", Honoured("Tollgate's own: the production set-up")),
    ("database", Honoured("Tollgate's own: Cassandra or ScyllaDB")),
    ("embedded", Honoured("Tollgate's own: the embedded SQLite ledger")),
    ("spool", Honoured("Tollgate's own: the usage spool")),
    ("budgets", Honoured("Tollgate's own: budget enforcement")),
    ("billing", Honoured("Tollgate's own: charging client hang-ups")),
    (
        "guardrails",
        Honoured("banned words and regexes, PII masking restored in the answer, and LiteLLM's generic guardrail API; pre_call and post_call, streams included (docs/guardrails.md)"),
    ),
    ("callback_settings", Ignored(CALLBACKS)),
    ("credential_list", Ignored("write `api_key` and `api_base` on each deployment (`os.environ/VAR` works)")),
    ("mcp_servers", Ignored(MCP)),
    ("include", Ignored("included files are not read: merge them into this file")),
    ("files_settings", Ignored(NOT_SERVED_FILES)),
    ("finetune_settings", Ignored(NOT_SERVED_FILES)),
    ("assistant_settings", Ignored("the Assistants API is not served")),
    ("vector_store_registry", Ignored("vector stores are not served")),
    ("search_tools", Ignored("search tools are not served")),
];

/// `model_list[].litellm_params`.
pub(super) const LITELLM_PARAMS: &[(&str, Status)] = &[
    ("model", Honoured("`provider/model`: the provider by its prefix, the rest sent upstream")),
    ("api_base", Honoured("the provider's base URL (`os.environ/VAR` allowed)")),
    ("api_key", Honoured("the provider key (`os.environ/VAR` allowed)")),
    ("api_version", Honoured("Azure OpenAI's `api-version` (`os.environ/VAR` allowed)")),
    ("vertex_project", Honoured("Vertex AI's project (default: the service account's `project_id`)")),
    ("vertex_location", Honoured("Vertex AI's region (default `us-central1`)")),
    ("vertex_credentials", Honoured("Vertex AI's service-account key: a file path or the JSON itself")),
    ("timeout", Honoured("the upstream timeout, in seconds")),
    ("stream_timeout", Honoured("the longest silence between two chunks of a stream, in seconds")),
    ("stream_max_duration", Honoured("Tollgate's own: the longest a stream may last, in seconds")),
    ("rpm", Honoured("requests per minute: a routing weight; a deployment at its limit is skipped")),
    ("tpm", Honoured("tokens per minute: a routing weight; a deployment at its limit is skipped")),
    ("weight", Honoured("the deployment's share under simple-shuffle")),
    ("input_cost_per_token", Honoured(PRICE_SERVED)),
    ("output_cost_per_token", Honoured(PRICE_SERVED)),
    ("cache_read_input_token_cost", Honoured(PRICE_SERVED)),
    ("cache_creation_input_token_cost", Honoured(PRICE_SERVED)),
    ("output_cost_per_reasoning_token", Honoured(PRICE_SERVED)),
    ("input_cost_per_audio_token", Honoured(PRICE_SERVED)),
    ("output_cost_per_audio_token", Honoured(PRICE_SERVED)),
    ("input_cost_per_image_token", Honoured(PRICE_SERVED)),
    ("output_cost_per_image_token", Honoured(PRICE_SERVED)),
    ("input_cost_per_request", Honoured(PRICE_SERVED)),
    ("input_cost_per_token_above_128k_tokens", Honoured(PRICE_SERVED)),
    ("output_cost_per_token_above_128k_tokens", Honoured(PRICE_SERVED)),
    ("input_cost_per_token_above_200k_tokens", Honoured(PRICE_SERVED)),
    ("output_cost_per_token_above_200k_tokens", Honoured(PRICE_SERVED)),
    ("cache_read_input_token_cost_above_200k_tokens", Honoured(PRICE_SERVED)),
    ("custom_llm_provider", Honoured("the provider of a `model` written without its `provider/` prefix")),
    ("max_retries", Ignored(ROUTER_RETRIES)),
    ("num_retries", Ignored(ROUTER_RETRIES)),
    ("cooldown_time", Ignored("`router_settings.cooldown_time` applies to every deployment")),
    ("organization", Ignored("the OpenAI-Organization header is not sent: use a project key as `api_key`")),
    ("order", Ignored("use `weight`, or fallbacks to a second model_name; deployments have no priority")),
    ("max_parallel_requests", Ignored(PARALLEL)),
    ("itpm", Ignored("use `tpm`")),
    ("otpm", Ignored("use `tpm`")),
    ("default_api_key_rpm_limit", Ignored(PER_ENTITY_LIMITS)),
    ("default_api_key_tpm_limit", Ignored(PER_ENTITY_LIMITS)),
    ("max_budget", Ignored(NO_PROVIDER_BUDGETS)),
    ("budget_duration", Ignored(NO_PROVIDER_BUDGETS)),
    ("tags", Ignored(TAGS)),
    ("tag_regex", Ignored(TAGS)),
    ("drop_params", Ignored(PASSED_UNCHANGED)),
    ("additional_drop_params", Ignored(PASSED_UNCHANGED)),
    ("merge_reasoning_content_in_choices", Ignored("reasoning content is passed on as the provider sends it")),
    ("supports_system_message", Ignored("system messages are passed on as sent")),
    ("mock_response", Ignored("point `api_base` at a test server instead")),
    ("mock_timeout", Ignored("point `api_base` at a test server instead")),
    ("use_in_pass_through", Ignored(PASS_THROUGH)),
    ("use_litellm_proxy", Ignored(PASS_THROUGH)),
    ("configurable_clientside_auth_params", Ignored(CLIENT_CREDENTIALS)),
    ("litellm_credential_name", Ignored("write `api_key` and `api_base` on the deployment (`os.environ/VAR` works)")),
    ("base_model", Ignored("set `model_info.base_model`; Tollgate prices by it")),
    ("ssl_verify", Ignored("upstream TLS certificates are always verified")),
    ("extra_headers", Ignored("no extra headers are sent to providers")),
    ("headers", Ignored("no extra headers are sent to providers")),
    ("extra_body", Ignored(DEFAULT_PARAMS)),
    ("temperature", Ignored(DEFAULT_PARAMS)),
    ("top_p", Ignored(DEFAULT_PARAMS)),
    ("max_tokens", Ignored(DEFAULT_PARAMS)),
    ("max_completion_tokens", Ignored(DEFAULT_PARAMS)),
    ("stop", Ignored(DEFAULT_PARAMS)),
    ("seed", Ignored(DEFAULT_PARAMS)),
    ("frequency_penalty", Ignored(DEFAULT_PARAMS)),
    ("presence_penalty", Ignored(DEFAULT_PARAMS)),
    ("response_format", Ignored(DEFAULT_PARAMS)),
    ("reasoning_effort", Ignored(DEFAULT_PARAMS)),
    ("thinking", Ignored(DEFAULT_PARAMS)),
    ("safety_settings", Ignored("Gemini safety settings are not sent; the provider's defaults apply")),
    ("auto_router_config_path", Ignored("clients name the model they want")),
    ("auto_router_config", Ignored("clients name the model they want")),
    ("auto_router_default_model", Ignored("clients name the model they want")),
    ("auto_router_embedding_model", Ignored("clients name the model they want")),
    ("region_name", Ignored(CLOUD_AUTH)),
    ("aws_access_key_id", Honoured(AWS_SIGNING)),
    ("aws_secret_access_key", Honoured(AWS_SIGNING)),
    ("aws_session_token", Honoured(AWS_SIGNING)),
    ("aws_region_name", Honoured("a `bedrock/` deployment's region: its endpoint and its signature")),
    ("aws_session_name", Ignored(AWS_STATIC_KEYS)),
    ("aws_profile_name", Ignored(AWS_STATIC_KEYS)),
    ("aws_role_name", Ignored(AWS_STATIC_KEYS)),
    ("aws_web_identity_token", Ignored(AWS_STATIC_KEYS)),
    ("aws_sts_endpoint", Ignored(AWS_STATIC_KEYS)),
    ("aws_external_id", Ignored(AWS_STATIC_KEYS)),
    ("aws_bedrock_runtime_endpoint", Honoured("a `bedrock/` deployment's endpoint in place of the region's")),
    ("watsonx_region_name", Ignored(CLOUD_AUTH)),
    ("azure_ad_token", Ignored(ENTRA_ID)),
    ("tenant_id", Ignored(ENTRA_ID)),
    ("client_id", Ignored(ENTRA_ID)),
    ("client_secret", Ignored(ENTRA_ID)),
    ("azure_scope", Ignored(ENTRA_ID)),
    ("azure_username", Ignored(ENTRA_ID)),
    ("azure_password", Ignored(ENTRA_ID)),
    ("input_cost_per_second", Ignored(PRICE_PER_TOKEN)),
    ("output_cost_per_second", Ignored(PRICE_PER_TOKEN)),
    ("input_cost_per_pixel", Ignored(PRICE_PER_TOKEN)),
    ("output_cost_per_pixel", Ignored(PRICE_PER_TOKEN)),
    ("input_cost_per_character", Ignored(PRICE_PER_TOKEN)),
    ("output_cost_per_character", Ignored(PRICE_PER_TOKEN)),
    ("input_cost_per_image", Ignored(PRICE_PER_TOKEN)),
    ("output_cost_per_image", Ignored(PRICE_PER_TOKEN)),
    ("input_cost_per_query", Ignored(PRICE_PER_TOKEN)),
    ("input_cost_per_token_batches", Ignored(PRICE_PER_TOKEN)),
    ("output_cost_per_token_batches", Ignored(PRICE_PER_TOKEN)),
    ("tiered_pricing", Ignored(PRICE_PER_TOKEN)),
];

/// `model_list[].model_info`. LiteLLM takes any key here, and so does Tollgate (served by
/// /model/info); only these are named, and only the ignored ones are reported.
pub(super) const MODEL_INFO: &[(&str, Status)] = &[
    ("input_cost_per_token", Honoured(PRICE_SERVED)),
    ("output_cost_per_token", Honoured(PRICE_SERVED)),
    ("cache_read_input_token_cost", Honoured(PRICE_SERVED)),
    ("base_model", Honoured("the model catalogue entry whose prices and context window apply")),
    ("access_groups", Honoured("groups a key's `models` may name instead of the model")),
    ("mode", Honoured(SERVED)),
    ("max_tokens", Honoured(SERVED)),
    ("max_input_tokens", Honoured(SERVED)),
    ("max_output_tokens", Honoured(SERVED)),
    ("description", Honoured(SERVED)),
    ("id", Ignored("usage events name a deployment `<litellm_params.model>#<position in model_list>`")),
    ("team_id", Ignored("models belong to no team: limit keys to models with their `models` list")),
    ("team_public_model_name", Ignored("models belong to no team: limit keys to models with their `models` list")),
    ("tier", Ignored(PER_ENTITY_LIMITS)),
];

/// `router_settings`.
pub(super) const ROUTER_SETTINGS: &[(&str, Status)] = &[
    (
        "routing_strategy",
        Honoured("simple-shuffle, least-busy, latency-based-routing, usage-based-routing(-v2), cost-based-routing"),
    ),
    ("num_retries", Honoured("retries within a model group (default 2)")),
    ("timeout", Honoured("the default upstream timeout, in seconds")),
    ("request_timeout", Honoured("the default upstream timeout when `timeout` is not set")),
    ("stream_timeout", Honoured("the longest silence between two chunks of a stream")),
    ("stream_max_duration", Honoured("Tollgate's own: the longest a stream may last (default 1800 s)")),
    ("fallbacks", Honoured("model groups tried after retries fail")),
    ("context_window_fallbacks", Honoured("model groups tried when the prompt is too long")),
    ("content_policy_fallbacks", Honoured("model groups tried when a content filter refuses")),
    ("default_fallbacks", Honoured("fallbacks of every model group that has none of its own")),
    ("max_fallbacks", Honoured("the most fallback model groups one request tries")),
    ("allowed_fails", Honoured("failures within a minute that cool a deployment down (default 3)")),
    ("cooldown_time", Honoured("how long a deployment cools down, in seconds (default 5)")),
    ("disable_cooldowns", Honoured("no deployment is ever cooled down")),
    ("retry_after", Honoured("the shortest wait before a retry, in seconds")),
    ("model_group_alias", Honoured("a requested alias is served by its model group; `hidden: true` unlists it")),
    ("redis_host", Ignored(SHARED_STATE)),
    ("redis_port", Ignored(SHARED_STATE)),
    ("redis_password", Ignored(SHARED_STATE)),
    ("redis_url", Ignored(SHARED_STATE)),
    ("redis_db", Ignored(SHARED_STATE)),
    ("cache_responses", Ignored(NO_CACHE)),
    ("cache_kwargs", Ignored(NO_CACHE)),
    ("caching_groups", Ignored(NO_CACHE)),
    ("client_ttl", Ignored("Tollgate builds one upstream client per process; there is nothing to expire")),
    ("enable_pre_call_checks", Honoured(PRE_CALL_CHECKS)),
    ("enable_pre_call_check", Honoured(PRE_CALL_CHECKS)),
    ("optional_pre_call_checks", Ignored("no optional pre-call checks are run")),
    ("enable_tag_filtering", Ignored(TAGS)),
    ("tag_filtering_match_any", Ignored(TAGS)),
    (
        "retry_policy",
        Ignored(
            "one retry count for every error: `num_retries` (rate limits, timeouts and 5xx are \
                              retried; other errors are not)",
        ),
    ),
    ("model_group_retry_policy", Ignored("one retry count for every model group: `num_retries`")),
    ("allowed_fails_policy", Ignored("one threshold for every error: `allowed_fails`")),
    ("default_max_parallel_requests", Ignored(PARALLEL)),
    ("default_priority", Ignored(SCHEDULER)),
    ("polling_interval", Ignored(SCHEDULER)),
    ("default_litellm_params", Ignored(DEFAULT_PARAMS)),
    ("routing_strategy_args", Ignored("the routing strategies take no arguments")),
    ("routing_groups", Ignored("one routing strategy serves every model group")),
    ("debug_level", Ignored(LOGGING)),
    ("set_verbose", Ignored(LOGGING)),
    ("alerting_config", Ignored(ALERTING)),
    ("assistants_config", Ignored("the Assistants API is not served")),
    ("provider_budget_config", Ignored(NO_PROVIDER_BUDGETS)),
    ("router_general_settings", Ignored("the router has no such switches")),
    ("deployment_affinity_ttl_seconds", Ignored("there is no session or deployment affinity")),
    ("ignore_invalid_deployments", Ignored("an invalid deployment is a config error, named at start-up")),
    ("search_tools", Ignored("search tools are not served")),
    ("guardrail_list", Ignored(GUARDRAILS)),
];

/// `litellm_settings`. LiteLLM reads most router settings here too; `router_settings` wins.
pub(super) const LITELLM_SETTINGS: &[(&str, Status)] = &[
    ("request_timeout", Honoured("the default upstream timeout, when `router_settings` sets none")),
    ("num_retries", Honoured(LITELLM_FIRST)),
    ("allowed_fails", Honoured(LITELLM_FIRST)),
    ("fallbacks", Honoured(LITELLM_FIRST)),
    ("default_fallbacks", Honoured(LITELLM_FIRST)),
    ("context_window_fallbacks", Honoured(LITELLM_FIRST)),
    ("content_policy_fallbacks", Honoured(LITELLM_FIRST)),
    ("callbacks", Honoured(CALLBACKS_HONOURED)),
    ("success_callback", Honoured(CALLBACKS_HONOURED)),
    ("failure_callback", Honoured(CALLBACKS_HONOURED)),
    ("service_callbacks", Ignored(CALLBACKS)),
    ("langfuse_default_tags", Ignored(CALLBACKS)),
    ("default_team_settings", Ignored(CALLBACKS)),
    (
        "prometheus_initialize_budget_metrics",
        Ignored("budget state is read from the ledger and the spend API, not from metrics"),
    ),
    ("custom_prometheus_metadata_labels", Ignored("metric labels are fixed and of bounded cardinality")),
    ("turn_off_message_logging", Ignored(NO_MESSAGE_LOGS)),
    ("redact_user_api_key_info", Ignored("keys are stored hashed and never logged")),
    ("redact_messages_in_exceptions", Ignored(NO_MESSAGE_LOGS)),
    ("json_logs", Ignored(LOGGING)),
    ("set_verbose", Ignored(LOGGING)),
    ("cache", Honoured("turns on the response cache for chat completions and /v1/messages")),
    (
        "cache_params",
        Honoured(
            "`type` (`local`, `redis`), `host`, `port`, `username`, `password`, `url`/`redis_url` (`rediss://` for \
             TLS), `ssl`, `ssl_cert_reqs` (`required` or `none`), `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, \
             `ttl`, `namespace`, `supported_call_types`; Tollgate adds `max_entry_bytes`, `max_memory_bytes`, `hit_cost_percent`, \
             `share_across_teams` and `redis_timeout_ms`",
        ),
    ),
    ("enable_caching_on_provider_specific_optional_params", Ignored(NO_CACHE)),
    ("guardrails", Ignored(GUARDRAILS)),
    ("output_parse_pii", Ignored(GUARDRAILS)),
    ("presidio_ad_hoc_recognizers", Ignored(GUARDRAILS)),
    ("drop_params", Ignored(PASSED_UNCHANGED)),
    ("modify_params", Ignored(PASSED_UNCHANGED)),
    ("LITELLM_DISABLE_STOP_SEQUENCE_LIMIT", Ignored(PASSED_UNCHANGED)),
    ("enable_json_schema_validation", Ignored("`response_format` schemas are not checked by the gateway")),
    ("enable_preview_features", Ignored("Tollgate has no preview switches")),
    ("force_ipv4", Ignored("upstream connections follow the system's address order")),
    ("ssl_verify", Ignored("upstream TLS certificates are always verified")),
    ("telemetry", Ignored("Tollgate sends no telemetry")),
    ("return_response_headers", Ignored("answers carry Tollgate's own headers (`x-tollgate-*`, rate limits)")),
    ("disable_add_transform_inline_image_block", Ignored(PROVIDER_TWEAKS)),
    ("disable_copilot_system_to_assistant", Ignored(PROVIDER_TWEAKS)),
    (
        "use_chat_completions_url_for_anthropic_messages",
        Ignored(
            "/v1/messages is translated by Tollgate for every \
                                                                  provider",
        ),
    ),
    ("disable_hf_tokenizer_download", Ignored("without provider usage, tokens are counted with o200k_base")),
    ("mcp_aliases", Ignored(MCP)),
    ("global_prompt_directory", Ignored(PROMPTS)),
    ("global_bitbucket_config", Ignored(PROMPTS)),
    ("global_gitlab_config", Ignored(PROMPTS)),
    ("priority_reservation_settings", Ignored(SCHEDULER)),
    ("model_group_settings", Ignored(NO_FORWARDED_HEADERS)),
    ("post_call_rules", Ignored(CUSTOM_CODE)),
    ("custom_provider_map", Ignored(CUSTOM_CODE)),
    ("responses", Ignored("clients wait for their answer; no background responses")),
    ("max_budget", Ignored("there is no proxy-wide budget: budget an organization")),
    ("budget_duration", Ignored("there is no proxy-wide budget: budget an organization")),
    ("max_internal_user_budget", Ignored(PER_ENTITY_LIMITS)),
    ("internal_user_budget_duration", Ignored(PER_ENTITY_LIMITS)),
    ("default_max_internal_user_budget", Ignored(PER_ENTITY_LIMITS)),
    ("default_internal_user_params", Ignored(PER_ENTITY_LIMITS)),
    ("max_end_user_budget", Ignored(PER_ENTITY_LIMITS)),
    ("default_key_generate_params", Ignored(PER_ENTITY_LIMITS)),
    ("upperbound_key_generate_params", Ignored(PER_ENTITY_LIMITS)),
    ("key_generation_settings", Ignored(PER_ENTITY_LIMITS)),
    ("enable_key_alias_format_validation", Ignored("key aliases are always checked (length, no control characters)")),
    ("disable_end_user_cost_tracking", Ignored("customer spend is always tracked; metrics never carry customer ids")),
    (
        "disable_end_user_cost_tracking_prometheus_only",
        Ignored("customer spend is always tracked; metrics never carry customer ids"),
    ),
];

/// `general_settings`.
pub(super) const GENERAL_SETTINGS: &[(&str, Status)] = &[
    ("master_key", Honoured("the admin key (`os.environ/VAR` allowed)")),
    ("database_url", Ignored(DATABASE)),
    ("database_connection_pool_limit", Ignored(DATABASE)),
    ("database_connection_timeout", Ignored(DATABASE)),
    ("disable_prisma_schema_update", Ignored("the CQL schema is applied at start-up unless `create_schema: false`")),
    ("allow_requests_on_db_unavailable", Ignored("keys are cached; budgets follow `budgets.when_stale`")),
    ("store_model_in_db", Ignored(MODELS_FROM_FILE)),
    ("supported_db_objects", Ignored(MODELS_FROM_FILE)),
    ("disable_spend_logs", Ignored(METERED_ALWAYS)),
    ("disable_spend_updates", Ignored(METERED_ALWAYS)),
    ("proxy_batch_write_at", Ignored(METERED_ALWAYS)),
    ("proxy_batch_polling_interval", Ignored("use `gateway.batches.poll_interval_secs` (docs/design.md §2.13)")),
    ("store_prompts_in_spend_logs", Ignored(NO_MESSAGE_LOGS)),
    ("maximum_spend_logs_retention_period", Ignored("request logs are not purged by the gateway")),
    ("maximum_spend_logs_retention_interval", Ignored("request logs are not purged by the gateway")),
    ("disable_reset_budget", Ignored(BUDGET_WINDOWS)),
    ("proxy_budget_rescheduler_min_time", Ignored(BUDGET_WINDOWS)),
    ("proxy_budget_rescheduler_max_time", Ignored(BUDGET_WINDOWS)),
    ("alerting", Ignored(ALERTING)),
    ("alerting_threshold", Ignored(ALERTING)),
    ("alerting_args", Ignored(ALERTING)),
    ("alert_types", Ignored(ALERTING)),
    ("alert_to_webhook_url", Ignored(ALERTING)),
    ("spend_report_frequency", Ignored(ALERTING)),
    // Not a LiteLLM setting (LiteLLM reads the Slack webhook from SLACK_WEBHOOK_URL and ignores
    // this key without a word), but found in LiteLLM production files: accepted so they load.
    ("slack_alerting_url", Ignored(ALERTING)),
    ("background_health_checks", Ignored(HEALTH)),
    ("health_check_interval", Ignored(HEALTH)),
    ("health_check_details", Ignored(HEALTH)),
    ("max_parallel_requests", Ignored(PARALLEL)),
    ("global_max_parallel_requests", Ignored(PARALLEL)),
    (
        "disable_retry_on_max_parallel_request_limit_error",
        Ignored(
            "a request over `max_parallel_requests` is \
                                                                   refused with 429, never retried",
        ),
    ),
    ("max_request_size_mb", Ignored("use `gateway.max_body_bytes`")),
    ("max_response_size_mb", Ignored("use `gateway.max_response_bytes`")),
    ("enable_jwt_auth", Ignored(AUTH)),
    ("litellm_jwtauth", Ignored(AUTH)),
    ("enable_oauth2_auth", Ignored(AUTH)),
    ("enable_oauth2_proxy_auth", Ignored(AUTH)),
    ("oauth2_config_mappings", Ignored(AUTH)),
    ("custom_sso", Ignored(AUTH)),
    ("allow_user_auth", Ignored(AUTH)),
    ("custom_auth", Ignored(CUSTOM_CODE)),
    ("custom_key_generate", Ignored(CUSTOM_CODE)),
    ("litellm_key_header_name", Ignored("keys are read from `Authorization`, `x-api-key` or `api-key`")),
    ("user_api_key_cache_ttl", Ignored("cached key records are dropped on change through the control topic")),
    ("key_management_system", Ignored(SECRETS)),
    ("key_management_settings", Ignored(SECRETS)),
    ("use_azure_key_vault", Ignored(SECRETS)),
    ("use_google_kms", Ignored(SECRETS)),
    ("allowed_routes", Ignored(ROUTE_ACCESS)),
    ("public_routes", Ignored(ROUTE_ACCESS)),
    ("admin_only_routes", Ignored(ROUTE_ACCESS)),
    ("allowed_ips", Ignored(ROUTE_ACCESS)),
    ("use_x_forwarded_for", Ignored(ROUTE_ACCESS)),
    ("enforced_params", Ignored("no request parameter is required")),
    ("enforce_user_param", Ignored("`user` is not required; when given it names the customer")),
    (
        "reject_clientside_metadata_tags",
        Honoured("a request with `metadata.tags` or `x-litellm-tags` is refused (400); key and team tags still apply"),
    ),
    ("disable_master_key_return", Ignored(NO_UI)),
    ("ui_access_mode", Ignored(NO_UI)),
    ("disable_adding_master_key_hash_to_db", Ignored("the master key is never stored")),
    ("disable_responses_id_security", Ignored("response ids are passed on unchanged")),
    ("default_team_disabled", Ignored(PER_ENTITY_LIMITS)),
    ("service_account_settings", Ignored(PER_ENTITY_LIMITS)),
    ("completion_model", Ignored(NAME_THE_MODEL)),
    ("embedding_model", Ignored(NAME_THE_MODEL)),
    ("image_generation_model", Ignored(NAME_THE_MODEL)),
    ("moderation_model", Ignored(NAME_THE_MODEL)),
    ("infer_model_from_keys", Ignored(NAME_THE_MODEL)),
    ("pass_through_endpoints", Ignored(PASS_THROUGH)),
    ("use_client_credentials_pass_through_routes", Ignored(PASS_THROUGH)),
    ("forward_client_headers_to_llm_api", Ignored(NO_FORWARDED_HEADERS)),
    ("forward_openai_org_id", Ignored(NO_FORWARDED_HEADERS)),
    ("allow_client_side_credentials", Ignored(CLIENT_CREDENTIALS)),
    ("user_mcp_management_mode", Ignored(MCP)),
    ("litellm_license", Ignored("Tollgate needs no licence key")),
];
