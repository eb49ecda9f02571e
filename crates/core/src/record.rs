//! Where a Responses API id's lane is kept beyond one process's memory: the engine asks, the
//! storage database (one machine) or the shared store (a fleet) answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A future of the record.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where response ids are kept beyond this process's memory. Failures are the record's to
/// log: a lost id costs a client its pinning, never its request.
pub trait IdRecord: Send + Sync {
    /// Records that `lane` made `id` for `key`.
    fn record(&self, id: String, lane: Arc<String>, key: Arc<String>) -> Pending<'_, ()>;
    /// The lane and the key of `id`, if recorded.
    fn find(&self, id: String) -> Pending<'_, Option<(String, String)>>;
    /// Forgets `id`.
    fn forget(&self, id: String) -> Pending<'_, ()>;
}
