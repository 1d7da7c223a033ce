//! The router as a config describes it: model groups, wildcards, aliases, fallbacks and the
//! retry policy, checked once at start (`Router::from_config`).

use super::*;

fn flatten(list: &FallbackList) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for entry in list {
        for (from, to) in entry {
            out.entry(from.clone()).or_default().extend(to.iter().cloned());
        }
    }
    out
}

impl Router {
    pub fn from_config(config: &Config, origin: &str) -> Result<Router, ConfigError> {
        let rs = &config.router_settings;
        let default_timeout = rs.timeout.unwrap_or(config.gateway.request_timeout_secs);
        let mut groups: HashMap<String, Vec<Arc<Deployment>>> = HashMap::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut names = Vec::new();
        for (i, m) in config.model_list.iter().enumerate() {
            let p = &m.litellm_params;
            let (provider, upstream) = crate::providers::split_model(&p.model);
            let api = crate::providers::by_prefix(provider).ok_or_else(|| ConfigError::Invalid {
                path: origin.to_owned(),
                field: format!("model_list[{i}].litellm_params.model"),
                message: format!(
                    "unknown provider `{provider}`; supported: {}",
                    crate::providers::supported_prefixes().join(", ")
                ),
            })?;
            let invalid = |field: &str, message: String| ConfigError::Invalid {
                path: origin.to_owned(),
                field: format!("model_list[{i}].litellm_params.{field}"),
                message,
            };
            let aws = api.signing(p).map_err(|(field, message)| invalid(field, message))?;
            let setup = api.setup(p).map_err(|e| invalid(e.field, e.message))?;
            let given = setup.api_base.clone().or_else(|| p.api_base.clone()).or_else(|| api.base_from_params(p));
            let api_base = match (given, default_api_base(provider)) {
                (Some(base), _) => base,
                (None, Some(base)) => base.to_owned(),
                (None, None) => {
                    return Err(ConfigError::Invalid {
                        path: origin.to_owned(),
                        field: format!("model_list[{i}].litellm_params.api_base"),
                        message: format!("provider `{provider}` needs an api_base"),
                    })
                }
            };
            let wildcard = m.model_name.contains('*');
            // A wildcard's deployments are priced per model they serve, unless configured.
            let price: Option<Price> =
                if wildcard { configured_price(config, i, origin)? } else { resolve_price(config, i, origin)? };
            let target =
                Target { api_base: &api_base, upstream_model: upstream, api_version: p.api_version.as_deref() };
            let urls = crate::providers::endpoint_urls(api, target).map_err(|message| ConfigError::Invalid {
                path: origin.to_owned(),
                field: format!("model_list[{i}].litellm_params.api_base"),
                message: format!("not a valid URL: {message}"),
            })?;
            let timeout = p.timeout.unwrap_or(default_timeout);
            let deployment = Deployment {
                model_name: m.model_name.clone(),
                provider: provider.to_owned(),
                api,
                upstream_model: upstream.to_owned(),
                id: format!("{}#{i}", p.model),
                api_base,
                urls,
                api_key: p.api_key.clone(),
                api_version: p.api_version.clone(),
                aws,
                service_account: setup.service_account,
                timeout: Duration::from_secs_f64(timeout),
                stream_idle_timeout: Duration::from_secs_f64(
                    p.stream_timeout.or(rs.stream_timeout).unwrap_or(timeout.min(300.0)),
                ),
                stream_max_duration: Duration::from_secs_f64(
                    p.stream_max_duration.or(rs.stream_max_duration).unwrap_or(DEFAULT_STREAM_MAX_DURATION_SECS),
                ),
                price,
                rpm: p.rpm,
                tpm: p.tpm,
                weight: p.weight.or(p.rpm.map(|r| r as f64)).or(p.tpm.map(|t| t as f64)).unwrap_or(1.0),
                max_input_tokens: deployment_context_window(m.model_info.as_ref(), provider, upstream, &m.model_name),
                model_info: m.model_info.clone(),
            };
            if !names.contains(&m.model_name) {
                names.push(m.model_name.clone());
            }
            if wildcard {
                let template = Template { deployment: Arc::new(deployment), price };
                match patterns.iter_mut().find(|p| p.name == m.model_name) {
                    Some(p) => p.push(template),
                    None => {
                        let mut p = Pattern::new(&m.model_name);
                        p.push(template);
                        patterns.push(p);
                    }
                }
            } else {
                groups.entry(m.model_name.clone()).or_default().push(Arc::new(deployment));
            }
        }
        let mut fallbacks = flatten(&rs.fallbacks);
        if !rs.default_fallbacks.is_empty() {
            fallbacks.entry("*".to_owned()).or_insert_with(|| rs.default_fallbacks.clone());
        }
        let mut router = Router {
            strategy: rs.routing_strategy,
            groups: groups.into_iter().map(|(name, d)| (name.clone(), Arc::new(ModelGroup::new(d, &name)))).collect(),
            wildcards: Wildcards::new(patterns),
            prices: config.prices.iter().map(|(name, p)| (name.clone(), Price::from(*p))).collect(),
            serve_unpriced: config.unpriced_models() == crate::config::UnpricedModels::Serve,
            fallbacks,
            context_window_fallbacks: flatten(&rs.context_window_fallbacks),
            content_policy_fallbacks: flatten(&rs.content_policy_fallbacks),
            aliases: rs
                .model_group_alias
                .iter()
                .map(|(alias, target)| (alias.clone(), target.group().to_owned()))
                .collect(),
            listed_aliases: rs.model_group_alias.iter().filter(|(_, t)| !t.hidden()).map(|(a, _)| a.clone()).collect(),
            policy: RetryPolicy {
                num_retries: rs.num_retries(),
                retry_after_min: Duration::from_secs_f64(rs.retry_after),
                allowed_fails: u64::from(rs.allowed_fails()),
                cooldown: Duration::from_secs_f64(rs.cooldown_time),
                cooldowns: !rs.disable_cooldowns,
                max_fallbacks: rs.max_fallbacks.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                pre_call_checks: rs.enable_pre_call_checks,
            },
            epoch: Instant::now(),
            names,
        };
        let worst: Vec<(String, Option<Price>, Option<u64>)> = router
            .groups
            .keys()
            .map(|n| (n.clone(), router.reachable_worst_price(n, None), router.reachable_default_output(n, None)))
            .collect();
        for (name, price, output) in worst {
            if let Some(group) = router.groups.get_mut(&name).and_then(Arc::get_mut) {
                group.worst_price = price;
                group.worst_default_output = output;
            }
        }
        Ok(router)
    }
}
