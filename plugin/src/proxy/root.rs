//! The root context: validates the configuration once per VM and hands every stream what it
//! needs. An invalid configuration refuses the filter, with every problem in Envoy's log.

use std::rc::Rc;

use fusebox_policy_schema::limits::MAX_LOGGED_ERRORS;
use fusebox_policy_schema::{Config, ConfigError, ConfigErrors};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use super::breaker::BreakerHome;
use super::host;
use super::http::FuseboxHttp;
use super::log_lines;
use super::metrics::{Metrics, FLUSH_PERIOD};
use super::shared::HostStore;
use super::shed::{ShedReporter, ShedRuntime};
use crate::policy::route_cache::RouteMetadataCache;
use crate::policy::shared::{SharedStore, SharedValue};
use crate::policy::shed::InFlight;

/// What every stream of this VM shares: immutable after `on_configure`.
pub struct Runtime {
    pub config: Config,
    pub metrics: Metrics,
    /// Per policy: where its breaker lives in shared data.
    pub breakers: Vec<BreakerHome>,
    /// Per policy: what shedding needs on every request.
    pub shed: Vec<Option<ShedRuntime>>,
    /// Each route's metadata policy, forgotten on every flush.
    pub route_metadata: RouteMetadataCache,
}

#[derive(Default)]
pub struct FuseboxRoot {
    runtime: Option<Rc<Runtime>>,
}

impl Context for FuseboxRoot {
    /// The plugin stops (Envoy drops or replaces it): what this worker still holds is written.
    fn on_done(&mut self) -> bool {
        log_lines::write_held();
        true
    }
}

impl RootContext for FuseboxRoot {
    fn on_configure(&mut self, configuration_size: usize) -> bool {
        // An oversized document is refused before it is copied into the VM.
        let document = fusebox_policy_schema::check_size(configuration_size).and_then(|()| {
            host::plugin_configuration().map_err(|_| {
                ConfigErrors(vec![ConfigError {
                    path: "$".to_owned(),
                    message: "Envoy did not hand over the configuration".to_owned(),
                }])
            })
        });
        match document.and_then(|document| fusebox_policy_schema::parse(&document)) {
            Ok(config) => {
                host::log(
                    LogLevel::Info,
                    &format!(
                        "configured with {} policies (correlation header `{}`)",
                        config.policies().len(),
                        config.correlation.header
                    ),
                );
                let metrics = Metrics::define(&config);
                let breakers = config
                    .policies()
                    .iter()
                    .map(BreakerHome::initialise)
                    .collect();
                let shed: Vec<Option<ShedRuntime>> =
                    config.policies().iter().map(ShedRuntime::new).collect();
                for (runtime, policy) in shed.iter().zip(config.policies()) {
                    if let (Some(runtime), Some(config)) = (runtime, &policy.shed) {
                        runtime.initialise(config);
                    }
                }
                if hostcalls::set_tick_period(FLUSH_PERIOD).is_err() {
                    host::log(
                        LogLevel::Error,
                        "cannot set a tick period: stats will not reach Envoy, and request lines only once a batch is full",
                    );
                }
                self.runtime = Some(Rc::new(Runtime {
                    config,
                    metrics,
                    breakers,
                    shed,
                    route_metadata: RouteMetadataCache::default(),
                }));
                true
            }
            Err(errors) => {
                let count = errors.len();
                host::log(
                    LogLevel::Error,
                    &format!("invalid configuration, refusing to start ({count} problems):"),
                );
                for error in errors.iter().take(MAX_LOGGED_ERRORS) {
                    host::log(LogLevel::Error, &format!("config error: {error}"));
                }
                if count > MAX_LOGGED_ERRORS {
                    host::log(
                        LogLevel::Error,
                        &format!("config error: … and {} more", count - MAX_LOGGED_ERRORS),
                    );
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        // Lines before stats: once a stat counts a finished request, its line is already in
        // the log.
        log_lines::write_held();
        if let Some(runtime) = &self.runtime {
            // This worker's idle leased slots go back first. The in-flight gauge reports the
            // shared count itself, not whatever this worker last saw: gauges are process-wide
            // and the workers flush at different moments (so it may include up to a batch of
            // slots another worker holds idle).
            for ((policy, shed), config) in runtime
                .shed
                .iter()
                .enumerate()
                .zip(runtime.config.policies())
            {
                let (Some(shed), Some(_), Some(id)) = (
                    shed,
                    config.shed.as_ref().and_then(|s| s.max_in_flight),
                    runtime.config.policy_id_at(policy),
                ) else {
                    continue;
                };
                shed.return_idle_slots(&ShedReporter {
                    metrics: &runtime.metrics,
                    policy_id: id,
                });
                let count = HostStore
                    .get(&shed.in_flight_key)
                    .ok()
                    .flatten()
                    .and_then(|(bytes, _)| InFlight::decode(&bytes))
                    .unwrap_or_default()
                    .count;
                runtime.metrics.set_in_flight(id, u64::from(count));
            }
            runtime.metrics.flush();
            runtime.route_metadata.clear();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Envoy only creates streams after a successful on_configure; should it ever not, the
        // stream passes through untouched rather than panicking the VM.
        Some(Box::new(FuseboxHttp::new(self.runtime.clone())))
    }
}
