//! The names of the headers Laneway adds to responses. A name given as a string is copied into
//! a new allocation on every insert; these are built once, at compile time.

use http::HeaderName;

pub use laneway_upstream::X_REQUEST_ID;
pub static X_LANEWAY_REQUEST_ID: HeaderName = HeaderName::from_static("x-laneway-request-id");
pub static X_LANEWAY_LANE: HeaderName = HeaderName::from_static("x-laneway-lane");
pub static X_LANEWAY_QUEUE_MS: HeaderName = HeaderName::from_static("x-laneway-queue-ms");
