//! Label values shared by the metrics, the request table and the live topology: names are
//! built once per lane, key and route and then shared by pointer.

use std::borrow::Cow;
use std::sync::Arc;

/// A label value shared by every request that carries it (a lane, key or route name), so that
/// recording a metric clones a pointer instead of allocating a string.
pub type Label = Arc<String>;

/// A label value that is usually a constant (`ok`, an error code) and sometimes built.
pub type Code = Cow<'static, str>;
