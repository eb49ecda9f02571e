//! The configuration in force, turned into live objects: lanes with their admission state, the
//! routing table, keys by secret. A reload builds a new `Topology` and swaps it in atomically;
//! lanes and keys with the same name are carried over (their counters, queues and running
//! requests survive), only their limits change.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use laneway_admission::{Key, KeySpec, Lane, LaneSpec, Mode, RateSpec};
use laneway_config::{Config, KeyConfig, LaneConfig, LaneKind, Limits, OnLimit};
use laneway_core::wire::Endpoint;
use laneway_core::Secret;
use laneway_upstream::{Endpoints, Target, UpstreamError};

use crate::label::Label;
use crate::ledger::LaneRecord;
use crate::observe::Observe;
use crate::retry::Budget;

pub struct LaneLive {
    pub lane: Arc<Lane>,
    pub config: LaneConfig,
    /// Upstream targets per endpoint (URL and key), checked and split once instead of per
    /// request; a URL that does not parse fails each request with the reason.
    pub targets: Result<Endpoints, UpstreamError>,
    /// Whether responses must be watched for usage to settle token limits.
    pub has_tpm: bool,
    /// Retries this lane may still spend; carried across reloads.
    pub budget: Arc<Budget>,
    /// The lane's name as a metrics label.
    pub label: Label,
    /// What requests record against the lane, made by the first one.
    record: OnceLock<Arc<LaneRecord>>,
}

impl LaneLive {
    pub fn record(&self, observer: &dyn Observe) -> Arc<LaneRecord> {
        self.record
            .get_or_init(|| Arc::new(LaneRecord::new(&self.label, observer)))
            .clone()
    }

    pub fn target(&self, e: Endpoint) -> Result<&Target, UpstreamError> {
        match &self.targets {
            Ok(t) => Ok(t.get(e)),
            Err(bad) => Err(bad.clone()),
        }
    }
}

pub struct RouteLive {
    pub pattern: String,
    /// The pool, in config order.
    pub pool: Vec<Arc<Lane>>,
    /// The same lanes as indices into [`Topology::lanes`]: `lanes[i]` is `pool[i]`.
    pub lanes: Vec<usize>,
    /// Fallback patterns, and the index into [`Topology::routes`] each leads to.
    pub fallbacks: Vec<(String, usize)>,
    /// The `model` label of the requests this route serves: the model each asked for, bounded.
    pub models: ModelLabels,
}

/// The `model` label values of one route: the model a request asked for, shared by pointer,
/// for at most `cap` distinct models; later ones are `other`, so a client inventing model ids
/// cannot grow the metrics without bound. Read without a lock; a new model copies the map
/// (at most `cap` times per route).
pub struct ModelLabels {
    known: arc_swap::ArcSwap<std::collections::HashMap<String, Label>>,
    cap: usize,
    other: Label,
}

impl ModelLabels {
    pub fn new(cap: usize) -> Self {
        Self {
            known: arc_swap::ArcSwap::from_pointee(std::collections::HashMap::new()),
            cap,
            other: Arc::new("other".to_owned()),
        }
    }

    /// The label for `model`.
    pub fn label(&self, model: &str) -> Label {
        if let Some(l) = self.known.load().get(model) {
            return l.clone();
        }
        let mut label = None;
        self.known.rcu(|known| {
            if let Some(l) = known.get(model) {
                label = Some(l.clone());
                return Arc::clone(known);
            }
            if known.len() >= self.cap {
                label = Some(self.other.clone());
                return Arc::clone(known);
            }
            let l: Label = Arc::new(model.to_owned());
            label = Some(l.clone());
            let mut next = std::collections::HashMap::clone(known);
            next.insert(model.to_owned(), l);
            Arc::new(next)
        });
        label.unwrap_or_else(|| self.other.clone())
    }
}

pub struct KeyLive {
    pub key: Arc<Key>,
    pub config: Option<KeyConfig>,
    /// The key's name as a metrics label.
    pub label: Label,
}

impl KeyLive {
    pub fn name(&self) -> &str {
        &self.key.name
    }

    pub fn allows(&self, model: &str) -> bool {
        self.config.as_ref().is_none_or(|c| c.allows(model))
    }
}

pub struct Topology {
    pub config: Config,
    pub lanes: Vec<LaneLive>,
    by_name: HashMap<String, usize>,
    pub routes: Vec<RouteLive>,
    keys: HashMap<String, Arc<KeyLive>>,
    anonymous: Arc<KeyLive>,
}

/// Key ids are never reused, so a key added by a reload cannot share a fair-queue account with
/// a key that was carried over. 0 is the anonymous key.
fn next_key_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The rate limits a config section sets.
pub fn rates(l: &Limits) -> RateSpec {
    RateSpec {
        per_second: l.rate.map(|r| (r.per_second, r.burst.get())),
        rpm: l.rpm.map(|r| r.get()),
        tpm: l.tpm.map(|t| t.get()),
    }
}

fn mode(o: OnLimit) -> Mode {
    match o {
        OnLimit::Reject => Mode::Reject,
        OnLimit::Queue => Mode::Queue,
    }
}

/// A lane's admission spec. With a shared store (`shared`), rates are the store's to enforce,
/// fleet-wide: checking them here as well would refuse requests the fleet still has room for.
pub fn lane_spec(c: &LaneConfig, max_pause: Duration, shared: bool) -> LaneSpec {
    LaneSpec {
        name: c.name.clone(),
        max_concurrent: c.limits.max_concurrent.map(|n| n.get()),
        rates: if shared {
            RateSpec::default()
        } else {
            rates(&c.limits)
        },
        queue_max_len: c.queue.max_len,
        queue_timeout: c.queue.timeout,
        on_limit: mode(c.on_limit),
        adaptive: c.adaptive,
        max_pause,
    }
}

fn key_spec(c: &KeyConfig, shared: bool) -> KeySpec {
    KeySpec {
        name: c.name.clone(),
        priority: c.priority,
        weight: c.weight.get(),
        on_limit: mode(c.on_limit),
        max_concurrent: c.limits.max_concurrent.map(|n| n.get()),
        rates: if shared {
            RateSpec::default()
        } else {
            rates(&c.limits)
        },
    }
}

/// The lanes of `config`, carrying over (and reconfiguring) those `previous` had by name.
fn build_lanes(
    config: &Config,
    previous: Option<&Topology>,
) -> (Vec<LaneLive>, HashMap<String, usize>) {
    let mut lanes = Vec::with_capacity(config.lanes.len());
    let mut by_name = HashMap::new();
    for (i, c) in config.lanes.iter().enumerate() {
        let spec = lane_spec(c, config.retry.max_pause, config.limits.is_shared());
        let (lane, budget) = match previous.and_then(|p| p.lane(&c.name)) {
            Some(old) => {
                old.lane.reconfigure(spec);
                (old.lane.clone(), old.budget.clone())
            }
            None => (Lane::new(spec), Arc::default()),
        };
        let auth = match c.api {
            laneway_config::Api::Anthropic => laneway_upstream::Auth::Anthropic,
            laneway_config::Api::OpenAi => laneway_upstream::Auth::Bearer,
        };
        // The lane's own connect timeout, applied again on every reload.
        let targets = Endpoints::with_auth(
            &c.url,
            c.api_key.as_ref().map(|k| k.expose().as_str()),
            auth,
        )
        .map(|t| t.with_connect_timeout(c.connect_timeout));
        by_name.insert(c.name.clone(), i);
        lanes.push(LaneLive {
            lane,
            budget,
            label: Arc::new(c.name.clone()),
            record: OnceLock::new(),
            has_tpm: c.limits.tpm.is_some(),
            targets,
            config: c.clone(),
        });
    }
    (lanes, by_name)
}

/// The keys of `config` by secret, carrying over (and reconfiguring) those `previous` had by name.
fn build_keys(config: &Config, previous: Option<&Topology>) -> HashMap<String, Arc<KeyLive>> {
    let mut keys = HashMap::new();
    for c in &config.keys {
        let spec = key_spec(c, config.limits.is_shared());
        let key = match previous.and_then(|p| p.keys.values().find(|k| k.name() == c.name)) {
            Some(old) => {
                old.key.reconfigure(spec);
                old.key.clone()
            }
            None => Key::new(next_key_id(), spec),
        };
        keys.insert(
            c.key.expose().clone(),
            Arc::new(KeyLive {
                key,
                config: Some(c.clone()),
                label: Arc::new(c.name.clone()),
            }),
        );
    }
    keys
}

impl Topology {
    /// Builds the live objects for `config`, reusing lanes and unchanged keys of `previous`.
    pub async fn build(
        mut config: Config,
        previous: Option<&Topology>,
        mocks: Option<&dyn crate::MockLanes>,
    ) -> std::io::Result<Self> {
        for lane in &mut config.lanes {
            if lane.kind == LaneKind::Mock && lane.url.is_empty() {
                let Some(mocks) = mocks else {
                    return Err(std::io::Error::other(format!(
                        "lane `{}` is of kind \"mock\", which only the `laneway` binary starts; run `laneway mock` and give the lane its url",
                        lane.name
                    )));
                };
                lane.url = mocks.url_for(&lane.name).await?;
            }
        }
        let (lanes, by_name) = build_lanes(&config, previous);
        let routes = config
            .routes
            .iter()
            .map(|r| RouteLive {
                pattern: r.model.clone(),
                pool: r.lanes.iter().map(|&i| lanes[i].lane.clone()).collect(),
                lanes: r.lanes.clone(),
                fallbacks: r
                    .fallbacks
                    .iter()
                    .cloned()
                    .zip(r.fallback_routes.iter().copied())
                    .collect(),
                models: ModelLabels::new(config.server.max_model_labels),
            })
            .collect();
        let keys = build_keys(&config, previous);
        let anonymous = previous.map_or_else(
            || {
                let key = Key::new(0, KeySpec::anonymous());
                let label = Arc::new(key.name.clone());
                Arc::new(KeyLive {
                    key,
                    config: None,
                    label,
                })
            },
            |p| p.anonymous.clone(),
        );
        Ok(Self {
            config,
            lanes,
            by_name,
            routes,
            keys,
            anonymous,
        })
    }

    pub fn lane(&self, name: &str) -> Option<&LaneLive> {
        self.by_name.get(name).map(|&i| &self.lanes[i])
    }

    /// A configured key by name (the anonymous one on a gateway without keys).
    pub fn key_named(&self, name: &str) -> Option<&Arc<KeyLive>> {
        if self.keys.is_empty() && self.anonymous.name() == name {
            return Some(&self.anonymous);
        }
        self.keys.values().find(|k| k.name() == name)
    }

    pub fn route_for(&self, model: &str) -> Option<&RouteLive> {
        self.config.route_for(model).map(|i| &self.routes[i])
    }

    /// The gateway's side of the lane at position `index` of `route`'s pool.
    pub fn pool_lane(&self, route: &RouteLive, index: usize) -> &LaneLive {
        &self.lanes[route.lanes[index]]
    }

    pub fn requires_key(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The key a presented secret belongs to; the anonymous key when no keys are configured.
    pub fn key(&self, presented: Option<&str>) -> Option<&Arc<KeyLive>> {
        if self.keys.is_empty() {
            return Some(&self.anonymous);
        }
        self.keys.get(presented?)
    }

    pub fn admin_key(&self) -> Option<&Secret<String>> {
        self.config.server.admin_key.as_ref()
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.server.request_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::ModelLabels;

    #[test]
    fn model_labels_are_the_requested_models_up_to_the_cap() {
        let labels = ModelLabels::new(2);
        let a = labels.label("mock-1");
        assert_eq!(a.as_str(), "mock-1");
        assert!(
            std::sync::Arc::ptr_eq(&a, &labels.label("mock-1")),
            "shared, not rebuilt"
        );
        assert_eq!(labels.label("mock-2").as_str(), "mock-2");
        assert_eq!(labels.label("mock-3").as_str(), "other");
        assert_eq!(labels.label("mock-1").as_str(), "mock-1");
        assert_eq!(ModelLabels::new(0).label("x").as_str(), "other");
    }
}
