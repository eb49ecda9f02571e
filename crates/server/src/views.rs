//! What the admin API and the panel show: every request in the gateway with its queue position,
//! and every lane's load and health, as plain serializable views.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use crate::App;
use laneway_engine::table::RequestView;

/// Where a queued request stands: its best position over the lanes it waits on (1 is next),
/// those lanes, and the expected wait.
#[derive(Clone, Debug)]
pub struct Standing {
    pub position: usize,
    pub lanes: Vec<String>,
    pub eta: std::time::Duration,
}

/// Queue standings by request tag, over every lane.
pub fn positions(app: &App) -> HashMap<u64, Standing> {
    let topo = app.topo.load();
    let mut pos: HashMap<u64, Standing> = HashMap::new();
    for l in &topo.lanes {
        for (i, (tag, eta)) in l.lane.waiting_with_eta().into_iter().enumerate() {
            let e = pos.entry(tag).or_insert(Standing {
                position: usize::MAX,
                lanes: Vec::new(),
                eta,
            });
            e.position = e.position.min(i + 1);
            e.eta = e.eta.min(eta);
            e.lanes.push(l.lane.name().to_owned());
        }
    }
    pos
}

/// [`positions`] computed at most every 250 ms and shared, so many waiting streams asking
/// where they stand cost one computation per interval, not one each.
/// Standings by request tag, as of when they were computed.
pub type Standings = (Instant, Arc<HashMap<u64, Standing>>);

#[derive(Default)]
pub struct StandingCache(std::sync::Mutex<Option<Standings>>);

impl StandingCache {
    const FRESH: std::time::Duration = std::time::Duration::from_millis(250);

    /// The standings, and when they were computed.
    pub fn get(&self, app: &App) -> Standings {
        let now = Instant::now();
        if let Some((at, map)) = &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            if now.duration_since(*at) < Self::FRESH {
                return (*at, map.clone());
            }
        }
        // Computed outside the lock: two callers may both compute, neither waits on the other.
        let map = Arc::new(positions(app));
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, map.clone()));
        (now, map)
    }
}

/// Where the request `tag` stands now, computed for it alone: for a stream that started waiting
/// after the shared standings were computed.
pub fn standing_of(app: &App, tag: u64) -> Option<(usize, std::time::Duration)> {
    let topo = app.topo.load();
    let mut best: Option<(usize, std::time::Duration)> = None;
    for l in &topo.lanes {
        let found = l
            .lane
            .waiting_with_eta()
            .into_iter()
            .enumerate()
            .find(|(_, (t, _))| *t == tag);
        if let Some((i, (_, eta))) = found {
            best = Some(match best {
                Some((p, e)) => (p.min(i + 1), e.min(eta)),
                None => (i + 1, eta),
            });
        }
    }
    best
}

/// This replica's requests.
pub fn views(app: &App) -> Vec<RequestView> {
    let now = Instant::now();
    let pos = positions(app);
    let replica = app.fleet.as_ref().map(|f| f.replica().to_owned());
    app.table
        .all()
        .into_iter()
        .map(|e| {
            let started = e.running();
            let queued_ms = started
                .as_ref()
                .map_or(now, |(s, _)| *s)
                .duration_since(e.created)
                .as_millis() as u64;
            let (position, pool) = match (&started, pos.get(&e.tag)) {
                (None, Some(s)) => (Some(s.position), s.lanes.clone()),
                _ => (None, Vec::new()),
            };
            RequestView {
                id: e.id.to_string(),
                client_request_id: e.client_id.as_deref().map(str::to_owned),
                state: if started.is_some() {
                    "running"
                } else {
                    "queued"
                },
                lane: started.as_ref().map(|(_, l)| l.to_string()),
                key: e.key().to_string(),
                model: e.model().to_string(),
                stream: e.stream(),
                queued_ms,
                running_ms: started
                    .as_ref()
                    .map(|(s, _)| now.duration_since(*s).as_millis() as u64),
                attempt: e.attempt.load(std::sync::atomic::Ordering::Relaxed),
                position,
                pool,
                replica: replica.clone(),
            }
        })
        .collect()
}

/// Every request of the fleet: this replica's, then the others' as they last published them.
pub fn fleet_views(app: &App) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = views(app)
        .into_iter()
        .filter_map(|v| serde_json::to_value(v).ok())
        .collect();
    if let Some(f) = &app.fleet {
        out.extend(f.requests());
    }
    out
}

/// Every lane as this replica sees it, with the other replicas' requests on it added.
pub fn fleet_lane_views(app: &App) -> Vec<LaneView> {
    let mut lanes = lane_views(app);
    if let Some(f) = &app.fleet {
        for load in f.lane_loads() {
            if let Some(l) = lanes.iter_mut().find(|l| l.name == load.name) {
                l.in_flight = l.in_flight.saturating_add(load.in_flight);
                l.queued = l.queued.saturating_add(load.queued);
            }
        }
    }
    lanes
}

#[derive(Serialize)]
pub struct LaneView {
    pub name: String,
    pub in_flight: u32,
    pub queued: usize,
    pub limit: Option<u32>,
    pub rpm_used: Option<u64>,
    pub tpm_used: Option<u64>,
    pub state: &'static str,
    pub cooldown_until: Option<String>,
    /// Paused by an operator: running requests finish, nothing new starts.
    pub paused: bool,
    /// `serial` (one at a time, set by an operator) or `parallel`.
    pub mode: &'static str,
    /// `config`, `adaptive` or `operator`: who set the limit in force.
    pub limit_source: &'static str,
}

pub fn lane_views(app: &App) -> Vec<LaneView> {
    let topo = app.topo.load();
    topo.lanes.iter().map(|l| lane_view(&l.lane)).collect()
}

pub fn lane_view(lane: &laneway_admission::Lane) -> LaneView {
    let s = lane.snapshot();
    LaneView {
        name: s.name,
        in_flight: s.in_flight,
        queued: s.queued,
        limit: s.limit,
        rpm_used: s.rpm_used,
        tpm_used: s.tpm_used,
        state: match s.health {
            laneway_admission::Health::Ok => "ok",
            laneway_admission::Health::CoolingDown => "cooling_down",
            laneway_admission::Health::Open => "open",
        },
        cooldown_until: s.cooldown_until.map(wall_clock),
        paused: s.paused,
        mode: if s.control == laneway_admission::Control::Serial {
            "serial"
        } else {
            "parallel"
        },
        limit_source: s.limit_source.as_str(),
    }
}

/// An RFC 3339 time `d` from now. Never fails: `d` is capped so the year stays printable.
fn wall_clock(d: std::time::Duration) -> String {
    let now = std::time::SystemTime::now();
    let at = now
        .checked_add(d.min(laneway_core::duration::CEILING))
        .unwrap_or(now);
    humantime::format_rfc3339_millis(at).to_string()
}
