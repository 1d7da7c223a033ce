//! Chooses a deployment for a requested model. Weighted strategies, retries, fallbacks and
//! cooldowns build on this.

use crate::config::Config;
use crate::providers::Deployment;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Router {
    by_model: HashMap<String, ModelGroup>,
}

struct ModelGroup {
    deployments: Vec<Arc<Deployment>>,
    next: AtomicUsize,
}

impl Router {
    pub fn from_config(config: &Config) -> Router {
        let mut by_model: HashMap<String, ModelGroup> = HashMap::new();
        for (i, m) in config.model_list.iter().enumerate() {
            let p = &m.litellm_params;
            let (provider, upstream) = p.model.split_once('/').unwrap_or(("openai", p.model.as_str()));
            let timeout = p.timeout.unwrap_or(config.gateway.request_timeout_secs);
            let deployment = Deployment {
                model_name: m.model_name.clone(),
                provider: provider.to_owned(),
                upstream_model: upstream.to_owned(),
                id: format!("{}#{i}", p.model),
                api_base: p.api_base.clone().unwrap_or_else(|| "https://api.openai.com/v1".to_owned()),
                api_key: p.api_key.clone(),
                timeout: Duration::from_secs_f64(timeout),
            };
            by_model
                .entry(m.model_name.clone())
                .or_insert_with(|| ModelGroup { deployments: Vec::new(), next: AtomicUsize::new(0) })
                .deployments
                .push(Arc::new(deployment));
        }
        Router { by_model }
    }

    /// Whether clients may ask for this model name.
    pub fn knows(&self, model_name: &str) -> bool {
        self.by_model.contains_key(model_name)
    }

    /// The next deployment of the model, round robin.
    pub fn pick(&self, model_name: &str) -> Option<Arc<Deployment>> {
        let group = self.by_model.get(model_name)?;
        let n = group.deployments.len();
        if n == 0 {
            return None;
        }
        let i = group.next.fetch_add(1, Ordering::Relaxed) % n;
        group.deployments.get(i).cloned()
    }
}
