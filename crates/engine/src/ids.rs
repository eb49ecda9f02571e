//! Who a request is: the id Laneway gives it and the client's own.

use std::sync::Arc;

use laneway_core::id::{accept_client_id, new_request_id};

/// Who a request is: the id the gateway assigned (the handle of the admin API, the panel and the
/// log) and the client's own `x-request-id`, kept beside it.
#[derive(Clone)]
pub struct RequestCtx {
    pub id: Arc<str>,
    pub client_id: Option<Arc<str>>,
}

impl RequestCtx {
    pub fn new(client_id: Option<&str>) -> Self {
        Self {
            id: Arc::from(new_request_id()),
            client_id: client_id.and_then(accept_client_id).map(Arc::from),
        }
    }
}
