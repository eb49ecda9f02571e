//! Request ids: `req_` and 24 random hex digits, unless the client sent its own `x-request-id`;
//! and the random bytes of every id that crosses a trust boundary (requests, files, batches,
//! responses), which come from the operating system's random source.

use std::cell::RefCell;

/// Random bytes are drawn from the OS this many at a time, per thread: one `getrandom` call
/// serves about a hundred request ids instead of one each.
const POOL: usize = 1024;

thread_local! {
    static RANDOM: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
}

/// Fills `out` with bytes from the operating system's random source (buffered per thread).
/// Only when the OS has no random source to give does it fall back to a seeded generator, so
/// that ids are still unique; that never happens on a supported system.
pub fn random_bytes(out: &mut [u8]) {
    RANDOM.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (pool, used) = &mut *guard;
        for chunk in out.chunks_mut(POOL) {
            if *used + chunk.len() > POOL {
                if getrandom::getrandom(pool).is_err() {
                    fallback(pool);
                }
                *used = 0;
            }
            chunk.copy_from_slice(&pool[*used..*used + chunk.len()]);
            // Bytes handed out are never handed out again.
            pool[*used..*used + chunk.len()].fill(0);
            *used += chunk.len();
        }
    });
}

fn fallback(pool: &mut [u8]) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut x =
        (seed as u64) ^ u64::from(std::process::id()).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    for b in pool.iter_mut() {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
    }
}

fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    u128::from_le_bytes(b)
}

/// Longest client-supplied id Laneway keeps; longer ones are replaced so that a hostile header
/// cannot bloat logs, the request table or the panel.
pub const MAX_CLIENT_ID_LEN: usize = 128;

pub fn new_request_id() -> String {
    new_id("req")
}

/// `PREFIX_` and 24 random hex digits (96 bits): unique without coordination, so ids made by
/// separate runs (a resumed batch, another replica) do not collide.
pub fn new_id(prefix: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 96 random bits as 24 hex digits, written by hand: one is made for every request, and
    // `format!` of a u128 costs several times as much.
    let bits = random_u128() >> 32;
    let mut digits = [0u8; 24];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((bits >> ((23 - i) * 4)) & 0xf) as usize];
    }
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    // Always ASCII hex digits.
    id.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    id
}

/// Keeps a client's id when it is short, printable ASCII; otherwise `None`.
pub fn accept_client_id(value: &str) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_CLIENT_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000, "no two of 10,000 ids collide");
        for id in &ids {
            let hex = id.strip_prefix("req_").expect("the req_ prefix");
            assert_eq!(hex.len(), 24, "{id}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        // 96 random bits: every hex position takes many values across the set.
        for pos in 0..24 {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[4 + pos]).collect();
            assert!(
                seen.len() >= 15,
                "position {pos} took only {} values",
                seen.len()
            );
        }
    }

    #[test]
    fn random_bytes_are_never_repeated_across_refills() {
        let mut seen = std::collections::HashSet::new();
        // Several refills of the pool, in pieces that straddle its end.
        for _ in 0..(4 * POOL / 24) {
            let mut b = [0u8; 24];
            random_bytes(&mut b);
            assert!(seen.insert(b), "a 24-byte draw repeated");
        }
        let mut big = vec![0u8; 3 * POOL + 7];
        random_bytes(&mut big);
        assert!(big.iter().filter(|&&b| b == 0).count() < big.len() / 16);
    }

    #[test]
    fn client_ids_are_checked() {
        assert_eq!(accept_client_id("abc-1"), Some("abc-1"));
        assert_eq!(accept_client_id(""), None);
        assert_eq!(accept_client_id("has space"), None);
        assert_eq!(accept_client_id(&"x".repeat(129)), None);
    }
}
