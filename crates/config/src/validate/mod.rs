//! Raw → validated, in one pass that collects every problem instead of stopping at the first.
//! One file per section of the file; cross-references (routes naming lanes, fallbacks naming
//! routes, the admin key against client keys) are checked here too.

mod check;
mod keys;
mod lanes;
mod rest;
mod server;

use crate::error::Problem;
use crate::model::*;
use crate::raw::*;

use check::Checker;
pub use check::{parse_size, DEFAULT_LISTEN};

pub fn validate(raw: RawConfig, text: &str) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };
    let server = server::server(&mut c, raw.server.as_ref());
    let lanes = lanes::lanes(&mut c, &raw.lane);
    let routes = lanes::routes(&mut c, &raw.route, &lanes);
    let keys = keys::keys(&mut c, &raw.key);
    let retry = rest::retry(&mut c, raw.retry.as_ref());
    let limits = rest::limits(&mut c, raw.limits.as_ref());
    let storage = rest::storage(&mut c, raw.storage.as_ref());
    keys::against_server(&mut c, &raw.key, &keys, &server);

    if c.problems.is_empty() {
        Ok(Config {
            server,
            lanes,
            routes,
            keys,
            retry,
            limits,
            storage,
        })
    } else {
        Err(c.problems)
    }
}
