//! While the store is down and the config says to keep serving (`on_store_error = "open"`),
//! each replica enforces the rate limits on its own, as it would without a shared store.

use std::collections::HashMap;
use std::sync::Mutex;

use laneway_admission::gcra::Denied;
use laneway_admission::rates::Rates;
use laneway_admission::{RateKind, RateSpec};
use tokio::time::Instant;

use crate::{Side, Terms, Verdict};

#[derive(Default)]
pub struct Fallback {
    /// By side and name: the limiter and the spec it was built from (a reload may change it).
    scopes: Mutex<HashMap<(Side, String), (RateSpec, Rates)>>,
}

impl Fallback {
    pub fn admit(&self, lane: Terms<'_>, key: Option<Terms<'_>>, tokens: u64) -> Verdict {
        let now = Instant::now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let mut sides = vec![(Side::Lane, lane)];
        sides.extend(key.map(|k| (Side::Key, k)));
        for &(side, t) in &sides {
            let (spec, rates) = scopes
                .entry((side, t.name.to_owned()))
                .or_insert_with(|| (t.rates, Rates::new(t.rates)));
            if *spec != t.rates {
                rates.reconfigure(t.rates);
                *spec = t.rates;
            }
            if let Err(b) = rates.check(now, tokens) {
                let after = match b.denied {
                    Denied::Until(at) => at.saturating_duration_since(now),
                    // Larger than the whole limit: the local admission refused it already.
                    Denied::Never => std::time::Duration::from_secs(60),
                };
                let kind: Option<RateKind> = Some(b.kind);
                return Verdict::Wait { side, kind, after };
            }
        }
        for (side, t) in sides {
            if let Some((_, rates)) = scopes.get_mut(&(side, t.name.to_owned())) {
                rates.take(now, tokens);
            }
        }
        Verdict::Local
    }
}
