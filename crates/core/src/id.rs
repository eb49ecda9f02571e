//! Request ids: `req_` and 24 random hex digits, unless the client sent its own `x-request-id`.

/// Longest client-supplied id Laneway keeps; longer ones are replaced so that a hostile header
/// cannot bloat logs, the request table or the panel.
pub const MAX_CLIENT_ID_LEN: usize = 128;

pub fn new_request_id() -> String {
    format!("req_{:024x}", fastrand::u128(..) >> 32)
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
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 28);
        assert!(a.starts_with("req_"));
    }

    #[test]
    fn client_ids_are_checked() {
        assert_eq!(accept_client_id("abc-1"), Some("abc-1"));
        assert_eq!(accept_client_id(""), None);
        assert_eq!(accept_client_id("has space"), None);
        assert_eq!(accept_client_id(&"x".repeat(129)), None);
    }
}
