//! Prometheus metrics (their names are part of Laneway's interface, listed in the README). Labels carry lane, key *names* and route models,
//! never secrets; the model label is the requested id only for literal routes and the route's
//! pattern for glob routes, so a client cannot explode cardinality by inventing model names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use laneway_engine::topology::Topology;

pub use laneway_engine::label::{Code, Label};
use laneway_engine::observe::{Finished, Observe, ObserveLane};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub lane: Label,
    pub key: Label,
    pub model: Label,
    pub code: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    pub lane: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneReason {
    pub lane: Label,
    pub reason: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneKind {
    pub lane: Label,
    pub kind: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneAction {
    pub lane: Label,
    pub action: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: Code,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 2 minutes: LLM calls span four orders of magnitude.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 18,
    ))
}

/// The series a request records against its lane, looked up once per lane (a family lookup
/// hashes the labels under the family's lock) and shared by every request on the lane.
pub struct LaneSeries {
    pub queue_wait: Histogram,
    pub upstream_duration: Histogram,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// Batch API items, counted apart from interactive requests.
    pub batch_items: Family<RequestLabels, Counter>,
    /// Batches that reached an end, by status (`completed`, `failed`, `expired`, `cancelled`).
    pub batches: Family<Reason, Counter>,
    pub in_flight: Family<LaneLabel, Gauge>,
    pub queued: Family<LaneLabel, Gauge>,
    pub concurrency_limit: Family<LaneLabel, Gauge>,
    pub queue_wait: Family<LaneLabel, Histogram, fn() -> Histogram>,
    pub upstream_duration: Family<LaneLabel, Histogram, fn() -> Histogram>,
    pub upstream_429: Family<LaneLabel, Counter>,
    pub retries: Family<LaneReason, Counter>,
    pub rejected: Family<Reason, Counter>,
    pub tokens: Family<LaneKind, Counter>,
    pub cancelled: Family<Reason, Counter>,
    pub connections: Gauge,
    pub lane_controls: Family<LaneAction, Counter>,
    /// The shared limit store: 1 when usable (always, with the memory store).
    pub store_up: Gauge,
    pub store_errors: Counter,
    pub store_served_open: Counter,
    pub store_leases: Gauge,
}

impl Default for Metrics {
    // Long: one registration per family, each a name and its help text: a list of data,
    // read top to bottom as the README's table of metrics; split, it would only be scattered.
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            requests: Family::default(),
            batch_items: Family::default(),
            batches: Family::default(),
            in_flight: Family::default(),
            queued: Family::default(),
            concurrency_limit: Family::default(),
            queue_wait: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_429: Family::default(),
            retries: Family::default(),
            rejected: Family::default(),
            tokens: Family::default(),
            cancelled: Family::default(),
            connections: Gauge::default(),
            lane_controls: Family::default(),
            store_up: Gauge::default(),
            store_errors: Counter::default(),
            store_served_open: Counter::default(),
            store_leases: Gauge::default(),
            registry: Registry::default(),
        };
        // Names are registered without the `_total` suffix; the encoder appends it to counters.
        registry.register(
            "laneway_requests",
            "Requests answered, by lane, key, model and code",
            m.requests.clone(),
        );
        registry.register(
            "laneway_batch_items",
            "Batch API items answered, by lane, key, model and code (not in laneway_requests)",
            m.batch_items.clone(),
        );
        registry.register(
            "laneway_batches",
            "Batches that ended, by status",
            m.batches.clone(),
        );
        registry.register(
            "laneway_in_flight",
            "Requests running upstream, by lane",
            m.in_flight.clone(),
        );
        registry.register(
            "laneway_queued",
            "Requests waiting for a lane slot, by lane",
            m.queued.clone(),
        );
        registry.register(
            "laneway_concurrency_limit",
            "Concurrency limit in force (fixed or adaptive), by lane; absent when unlimited",
            m.concurrency_limit.clone(),
        );
        registry.register(
            "laneway_queue_wait_seconds",
            "Time from arrival to a lane slot",
            m.queue_wait.clone(),
        );
        registry.register(
            "laneway_upstream_duration_seconds",
            "Time from sending upstream to the end of the response",
            m.upstream_duration.clone(),
        );
        registry.register(
            "laneway_upstream_429",
            "429 answers received from upstreams",
            m.upstream_429.clone(),
        );
        registry.register(
            "laneway_retries",
            "Upstream attempts retried, by lane and reason",
            m.retries.clone(),
        );
        registry.register(
            "laneway_rejected",
            "Requests refused by the gateway, by error code",
            m.rejected.clone(),
        );
        registry.register(
            "laneway_tokens",
            "Tokens reported by upstreams, by lane and kind",
            m.tokens.clone(),
        );
        registry.register(
            "laneway_cancelled",
            "Requests ended early, by reason",
            m.cancelled.clone(),
        );
        registry.register(
            "laneway_connections",
            "Open client connections (see server.max_connections)",
            m.connections.clone(),
        );
        registry.register(
            "laneway_lane_controls",
            "Operator actions on lanes (pause, resume, drain, concurrency), by lane and action",
            m.lane_controls.clone(),
        );
        registry.register(
            "laneway_store_up",
            "Whether the shared limit store answers (1) or limits are local only (0)",
            m.store_up.clone(),
        );
        registry.register(
            "laneway_store_errors",
            "Calls to the shared limit store that failed or timed out",
            m.store_errors.clone(),
        );
        registry.register(
            "laneway_store_served_open",
            "Requests served on local limits alone while the shared store was down",
            m.store_served_open.clone(),
        );
        registry.register(
            "laneway_store_leases",
            "Concurrency leases this replica holds in the shared store",
            m.store_leases.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The lane-labelled series of `lane`; the handles share their values with the families.
    pub fn lane_series(&self, lane: &Label) -> LaneSeries {
        let one = LaneLabel { lane: lane.clone() };
        let tokens = |kind: &'static str| {
            self.tokens
                .get_or_create(&LaneKind {
                    lane: lane.clone(),
                    kind: Code::Borrowed(kind),
                })
                .clone()
        };
        LaneSeries {
            queue_wait: self.queue_wait.get_or_create(&one).clone(),
            upstream_duration: self.upstream_duration.get_or_create(&one).clone(),
            prompt_tokens: tokens("prompt"),
            completion_tokens: tokens("completion"),
        }
    }

    /// Refreshes the lane gauges from the live lanes and encodes everything.
    pub fn render(
        &self,
        topo: &Topology,
        connections: usize,
        store: Option<&laneway_store::Store>,
        format: Exposition,
    ) -> String {
        self.store_up
            .set(i64::from(store.is_none_or(laneway_store::Store::is_up)));
        if let Some(s) = store {
            // The store counts in atomics; the counters catch up to them here.
            self.store_errors
                .inc_by(s.errors().saturating_sub(self.store_errors.get()));
            self.store_served_open.inc_by(
                s.served_open_total()
                    .saturating_sub(self.store_served_open.get()),
            );
            self.store_leases
                .set(i64::try_from(s.held()).unwrap_or(i64::MAX));
        }
        self.connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        for l in &topo.lanes {
            let s = l.lane.snapshot();
            let label = LaneLabel {
                lane: l.label.clone(),
            };
            self.in_flight
                .get_or_create(&label)
                .set(i64::from(s.in_flight));
            self.queued.get_or_create(&label).set(s.queued as i64);
            match s.limit {
                Some(limit) => {
                    self.concurrency_limit
                        .get_or_create(&label)
                        .set(i64::from(limit));
                }
                None => {
                    self.concurrency_limit.remove(&label);
                }
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Exposition::OpenMetrics => out,
            Exposition::Text => openmetrics_to_text(&out),
        }
    }
}

/// The two forms `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// Prometheus' text format 0.0.4: what `curl`, `promtool` and most tools read.
    Text,
    /// OpenMetrics 1.0, for scrapers that ask for it in `Accept` (Prometheus itself does).
    OpenMetrics,
}

impl Exposition {
    /// OpenMetrics only when the `Accept` header names it.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// OpenMetrics text as Prometheus text 0.0.4. The samples are the same; what differs is that a
/// counter family's `# HELP` and `# TYPE` name the sample (`x_total`, not `x`), and that there is
/// no `# UNIT` or `# EOF` line.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl ObserveLane for LaneSeries {
    fn queue_wait(&self, d: std::time::Duration) {
        self.queue_wait.observe(d.as_secs_f64());
    }

    fn upstream(&self, d: std::time::Duration) {
        self.upstream_duration.observe(d.as_secs_f64());
    }

    fn tokens(&self, prompt: u64, completion: u64) {
        self.prompt_tokens.inc_by(prompt);
        self.completion_tokens.inc_by(completion);
    }
}

/// The engine's events, counted.
impl Observe for Metrics {
    fn lane(&self, lane: &Label) -> std::sync::Arc<dyn ObserveLane> {
        std::sync::Arc::new(self.lane_series(lane))
    }

    fn retry(&self, lane: &Label, reason: Code) {
        self.retries
            .get_or_create(&LaneReason {
                lane: lane.clone(),
                reason,
            })
            .inc();
    }

    fn upstream_429(&self, lane: &Label) {
        self.upstream_429
            .get_or_create(&LaneLabel { lane: lane.clone() })
            .inc();
    }

    fn rejected(&self, code: &'static str) {
        self.rejected
            .get_or_create(&Reason {
                reason: Code::Borrowed(code),
            })
            .inc();
    }

    fn finished(&self, f: &Finished<'_>) {
        let family = if f.batch {
            &self.batch_items
        } else {
            &self.requests
        };
        family
            .get_or_create(&RequestLabels {
                lane: f.lane.clone(),
                key: f.key.clone(),
                model: f.model.clone(),
                code: f.code.clone(),
            })
            .inc();
        if let Some(r) = f.cancelled {
            self.cancelled
                .get_or_create(&Reason {
                    reason: Code::Borrowed(r),
                })
                .inc();
        }
    }

    fn batch_ended(&self, status: &'static str) {
        self.batches
            .get_or_create(&Reason {
                reason: Code::Borrowed(status),
            })
            .inc();
    }
}
