//! One admin view and one set of controls for a fleet: replicas that share a Redis store
//! (`[limits] store`) publish what they hold twice a second, so `/admin/requests`, `/admin/lanes`
//! and the panel on any replica show every replica's requests (each with its `replica`), and
//! an operator's action on one replica is published to all: cancel and stop reach the replica
//! that holds the request, Stop all and Clear queue every replica (their counts summed from the
//! replicas' answers), pause, resume, drain and lane limits every replica's lane.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use laneway_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::App;

/// How often a replica publishes its state and reads the others'.
const TICK: Duration = Duration::from_millis(500);
/// Requests a replica publishes at most (the first in the table).
const MAX_PUBLISHED: usize = 1000;
/// How long an action waits for the replicas' answers.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// A lane's load on one replica, or summed over the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaneLoad {
    pub name: String,
    pub in_flight: u32,
    pub queued: usize,
}

/// What a replica publishes.
#[derive(Serialize, Deserialize)]
struct State {
    replica: String,
    requests: Vec<Value>,
    lanes: Vec<LaneLoad>,
}

/// An operator's action, as published to the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    /// `cancel`, `stop`, `stop-all`, `clear-queue`, `pause`, `resume`, `drain`, `patch`.
    pub op: String,
    /// The replica the operator asked.
    pub from: String,
    /// This action's name, under which the replicas answer.
    pub action: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub lane: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
}

/// This replica's part in the fleet.
pub struct Fleet {
    store: Store,
    /// The other replicas' last published states.
    others: Mutex<Vec<State>>,
}

impl Fleet {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            others: Mutex::default(),
        }
    }

    pub fn replica(&self) -> &str {
        self.store.replica()
    }

    fn others(&self) -> std::sync::MutexGuard<'_, Vec<State>> {
        self.others.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The other replicas' requests, each with its `replica`.
    pub fn requests(&self) -> Vec<Value> {
        self.others()
            .iter()
            .flat_map(|s| s.requests.iter().cloned())
            .collect()
    }

    /// The other replicas' load on each lane, summed.
    pub fn lane_loads(&self) -> Vec<LaneLoad> {
        let mut out: Vec<LaneLoad> = Vec::new();
        for s in self.others().iter() {
            for l in &s.lanes {
                match out.iter_mut().find(|o| o.name == l.name) {
                    Some(o) => {
                        o.in_flight = o.in_flight.saturating_add(l.in_flight);
                        o.queued = o.queued.saturating_add(l.queued);
                    }
                    None => out.push(l.clone()),
                }
            }
        }
        out
    }

    /// How many other replicas published lately.
    pub fn peers(&self) -> usize {
        self.others().len()
    }

    /// Publishes an action and collects the answers of up to `expect` replicas, within a second.
    pub async fn ask(
        &self,
        op: &str,
        id: Option<&str>,
        lane: Option<&str>,
        body: Option<String>,
        expect: usize,
    ) -> Vec<Value> {
        let name = laneway_core::id::new_request_id();
        let action = Action {
            op: op.to_owned(),
            from: self.replica().to_owned(),
            action: name.clone(),
            id: id.map(str::to_owned),
            lane: lane.map(str::to_owned),
            body,
        };
        self.store
            .broadcast(serde_json::to_string(&action).unwrap_or_default())
            .await;
        if expect == 0 {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            let answers = self.store.replies(&name).await;
            if answers.len() >= expect || tokio::time::Instant::now() >= deadline {
                return answers
                    .iter()
                    .filter_map(|a| serde_json::from_str(a).ok())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Carries out an action published by another replica; the answer, when one is awaited.
pub type Act = fn(&App, &Action) -> Option<Value>;

/// Starts publishing this replica's state and acting (with `act`) on the fleet's actions, for
/// as long as the gateway lives.
pub fn spawn(app: &Arc<App>, act: Act) {
    let Some(fleet) = &app.fleet else { return };
    let weak = Arc::downgrade(app);
    tokio::spawn(publish(weak.clone()));
    tokio::spawn(listen(weak, fleet.store.actions(), act));
}

async fn publish(app: Weak<App>) {
    loop {
        let Some(app) = app.upgrade() else { return };
        let Some(fleet) = &app.fleet else { return };
        let mut requests: Vec<Value> = crate::views::views(&app)
            .into_iter()
            .take(MAX_PUBLISHED)
            .filter_map(|v| serde_json::to_value(v).ok())
            .collect();
        requests.shrink_to_fit();
        let lanes = crate::views::lane_views(&app)
            .into_iter()
            .map(|l| LaneLoad {
                name: l.name,
                in_flight: l.in_flight,
                queued: l.queued,
            })
            .collect();
        let state = State {
            replica: fleet.replica().to_owned(),
            requests,
            lanes,
        };
        fleet
            .store
            .publish_state(serde_json::to_string(&state).unwrap_or_default())
            .await;
        let others = fleet
            .store
            .fleet_states()
            .await
            .iter()
            .filter_map(|s| serde_json::from_str::<State>(s).ok())
            .collect();
        *fleet.others() = others;
        drop(app);
        tokio::time::sleep(TICK).await;
    }
}

async fn listen(app: Weak<App>, mut actions: tokio::sync::broadcast::Receiver<String>, act: Act) {
    loop {
        let action = match actions.recv().await {
            Ok(a) => a,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(app) = app.upgrade() else { return };
        let Some(fleet) = &app.fleet else { return };
        let Ok(action) = serde_json::from_str::<Action>(&action) else {
            continue;
        };
        if action.from == fleet.replica() {
            continue;
        }
        if let Some(answer) = act(&app, &action) {
            fleet.store.reply(&action.action, answer.to_string()).await;
        }
    }
}
