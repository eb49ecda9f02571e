//! Getting an answer from upstream: attempts on the route's pool, retries that prefer another
//! lane, feedback to each lane's health, and the route's fallbacks.
//!
//! The commit point: everything here happens before the first byte goes to the client. Once a
//! success is returned, its body is relayed as it comes and nothing is retried.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use laneway_admission::{acquire, acquire_with_key, AdmissionError, Ask, KeyPermit, Lane, Permit};
use laneway_core::glob;
use laneway_upstream::UpstreamBody;
use tokio::time::Instant;

use crate::attempt::{self, Verdict};
use crate::ledger::Ledger;
use crate::plan::Plan;
use crate::retry;
use crate::topology::{LaneLive, RouteLive};
use crate::Error;

/// An upstream success, with the slot it holds.
pub struct Forwarded {
    pub response: http::Response<UpstreamBody>,
    pub permit: Permit,
    /// Laneway asked for a usage chunk the client did not want; the relay removes it.
    pub strip_usage: bool,
}

/// A failure, and whether the route's fallbacks should be tried.
struct Failure {
    error: Error,
    fallback: bool,
}

impl Failure {
    fn last(error: Error) -> Self {
        Self {
            error,
            fallback: false,
        }
    }

    fn route_down(error: Error) -> Self {
        Self {
            error,
            fallback: true,
        }
    }
}

/// Serves the request from its route, then from each fallback in order.
pub async fn forward(
    plan: &Plan<'_>,
    route: &RouteLive,
    ledger: &mut Ledger,
) -> Result<Forwarded, Error> {
    let mut failure = match serve_route(plan, route, None, ledger).await {
        Ok(f) => return Ok(f),
        Err(f) => f,
    };
    for (pattern, target) in &route.fallbacks {
        // A request pinned to the lane that made its previous response cannot go elsewhere.
        if !failure.fallback || plan.entry.cancel.is_cancelled() || plan.pin.is_some() {
            break;
        }
        // A literal fallback names the model to ask for; a pattern keeps the client's model
        // (the fallback lanes' `model` setting may still rewrite it).
        let model = glob::is_literal(pattern).then_some(pattern.as_str());
        tracing::info!(id = %plan.entry.id, fallback = %pattern, "route unavailable, trying its fallback");
        failure = match serve_route(plan, &plan.topo.routes[*target], model, ledger).await {
            Ok(f) => return Ok(f),
            Err(f) => f,
        };
    }
    Err(failure.error)
}

/// The lanes a request may try next, as positions in its route's pool.
struct Candidates<'p> {
    lanes: Cow<'p, [Arc<Lane>]>,
    /// `positions[i]` is where `lanes[i]` stands in the pool; `None` when `lanes` is the pool.
    positions: Option<Vec<usize>>,
}

impl<'p> Candidates<'p> {
    /// The pool without the lanes that already failed this request, or the whole pool when
    /// every lane failed once. The first attempt borrows the pool as it is. A pinned request
    /// has its one lane, failed or not.
    fn new(pool: &'p [Arc<Lane>], failed: &[usize], pin: Option<usize>) -> Self {
        if let Some(p) = pin.filter(|&p| p < pool.len()) {
            return Self {
                lanes: Cow::Owned(vec![pool[p].clone()]),
                positions: Some(vec![p]),
            };
        }
        let fresh: Vec<usize> = if failed.is_empty() {
            Vec::new()
        } else {
            (0..pool.len()).filter(|i| !failed.contains(i)).collect()
        };
        if fresh.is_empty() {
            return Self {
                lanes: Cow::Borrowed(pool),
                positions: None,
            };
        }
        Self {
            lanes: Cow::Owned(fresh.iter().map(|&i| pool[i].clone()).collect()),
            positions: Some(fresh),
        }
    }

    /// The pool position of the lane a permit was granted on.
    fn pool_position(&self, permit: &Permit) -> usize {
        let i = permit.pool_index();
        self.positions.as_ref().map_or(i, |p| p[i])
    }
}

/// Serves the request from one route's pool: admission, an attempt, its verdict, and a retry
/// after a delay while the verdict, the budget and the deadline allow.
async fn serve_route(
    plan: &Plan<'_>,
    route: &RouteLive,
    model: Option<&str>,
    ledger: &mut Ledger,
) -> Result<Forwarded, Failure> {
    let retry = &plan.topo.config.retry;
    // Pool positions of the lanes that failed this request.
    let mut failed: Vec<usize> = Vec::new();
    let mut attempt = 0;
    // After the first attempt the request keeps its key's share across retries: it is still one
    // request to its key's limits.
    let mut key_share: Option<KeyPermit> = None;
    loop {
        let (permit, position) = admit(plan, route, &failed, key_share.take()).await?;
        let lane = plan.topo.pool_lane(route, position);
        attempt += 1;
        started(plan, lane, &permit, attempt, ledger);
        if !failed.contains(&position) {
            lane.budget.deposit(retry);
        }
        // Boxed: inline, the attempt's state (the upstream call, several KiB) would be part of
        // this future while the request only waits in a queue, and ten thousand waiting
        // requests would each hold it.
        let (verdict, permit) = Box::pin(attempt::once(plan, lane, model, permit)).await;
        let (error, hint, reason) = match verdict {
            Verdict::Success {
                response,
                strip_usage,
            } => {
                return Ok(Forwarded {
                    response,
                    permit,
                    strip_usage,
                })
            }
            Verdict::Final(e) => return Err(Failure::last(e)),
            Verdict::Retry {
                error,
                hint,
                reason,
            } => (error, hint, reason),
        };
        if !failed.contains(&position) {
            failed.push(position);
        }
        key_share = permit.into_key();
        let may_retry = attempt < retry.max_attempts.get() && lane.budget.withdraw(retry);
        let another_lane = plan.pin.is_none() && route.pool.len() > failed.len();
        let remaining = plan.deadline.saturating_duration_since(Instant::now());
        let Some(delay) = may_retry
            .then(|| retry::delay(retry, attempt, another_lane, hint, remaining))
            .flatten()
        else {
            return Err(Failure::route_down(error));
        };
        plan.engine.observer().retry(&lane.label, reason);
        // The delay ends before the deadline (`retry::delay` saw to it); only a stop cuts it.
        if let Err(stop) = plan
            .entry
            .within(plan.deadline, tokio::time::sleep(delay))
            .await
        {
            return Err(Failure::last(stop.into()));
        }
    }
}

/// Waits for a slot on the lanes not yet failed (all of them once every lane failed), and
/// says where the granted lane stands in the pool.
async fn admit(
    plan: &Plan<'_>,
    route: &RouteLive,
    failed: &[usize],
    key_share: Option<KeyPermit>,
) -> Result<(Permit, usize), Failure> {
    let entry = plan.entry;
    entry.set_waiting();
    let candidates = Candidates::new(&route.pool, failed, plan.pin);
    let ask = Ask {
        key: &plan.key.key,
        priority: plan.priority,
        tokens: plan.tokens,
        deadline: plan.deadline,
        cancel: &entry.cancel,
        tag: entry.tag,
    };
    let admitted = match key_share {
        Some(k) => acquire_with_key(&candidates.lanes, ask, k).await,
        None => acquire(&candidates.lanes, ask).await,
    };
    match admitted {
        Ok(mut permit) => {
            let position = candidates.pool_position(&permit);
            if let Some(store) = &plan.engine.store {
                let lane = &plan.topo.lanes[route.lanes[position]];
                // Boxed: the shared store's round trip is a large future that only replicas
                // sharing their limits need; inline, every request would carry its space.
                Box::pin(crate::shared::hold(plan, &**store, lane, &mut permit))
                    .await
                    .map_err(Failure::last)?;
            }
            Ok((permit, position))
        }
        Err(e @ AdmissionError::NoLaneAvailable { .. }) => Err(Failure::route_down(e.into())),
        Err(e) => Err(Failure::last(e.into())),
    }
}

/// Records that an attempt starts on `lane`: the request table, the queue-wait metric, the log.
fn started(plan: &Plan<'_>, lane: &LaneLive, permit: &Permit, attempt: u32, ledger: &mut Ledger) {
    let entry = plan.entry;
    entry.set_running(lane.label.clone());
    entry.attempt.store(attempt, Ordering::Relaxed);
    let record = lane.record(plan.engine.observer());
    record.series.queue_wait(permit.queued_for);
    ledger.lane = Some(record);
    ledger.queue_wait = Some(ledger.queue_wait.unwrap_or_default() + permit.queued_for);
    ledger.upstream_start = Some(Instant::now());
}
