//! Request ids: `req_` and 24 random hex digits, unless the client sent its own `x-request-id`.

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
    let bits = fastrand::u128(..) >> 32;
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
    fn digits_are_the_random_bits_in_order() {
        fastrand::seed(7);
        let id = new_id("item");
        fastrand::seed(7);
        let expected = format!("item_{:024x}", fastrand::u128(..) >> 32);
        assert_eq!(id, expected);
    }

    #[test]
    fn client_ids_are_checked() {
        assert_eq!(accept_client_id("abc-1"), Some("abc-1"));
        assert_eq!(accept_client_id(""), None);
        assert_eq!(accept_client_id("has space"), None);
        assert_eq!(accept_client_id(&"x".repeat(129)), None);
    }
}
