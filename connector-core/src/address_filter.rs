//! Which devices a peer's data belongs to: ThingsBoard's address filter on `ip:port`.
//!
//! Every `*` becomes `.*`, the result is a regular expression matched against the whole
//! `ip:port` string; a pattern that does not compile only matches its exact text.

use std::net::SocketAddr;

use regex::Regex;

#[derive(Debug, Clone)]
pub struct AddressFilter {
    pattern: String,
    regex: Option<Regex>,
}

impl AddressFilter {
    pub fn new(pattern: &str) -> Self {
        let anchored = format!("^(?:{})$", pattern.replace('*', ".*"));
        Self {
            pattern: pattern.to_owned(),
            regex: Regex::new(&anchored).ok(),
        }
    }

    /// The pattern as configured.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The pattern is not a valid regular expression, so only exact equality matches.
    pub fn is_exact_only(&self) -> bool {
        self.regex.is_none()
    }

    /// Matches a peer rendered by [`peer_string`].
    pub fn matches(&self, peer: &str) -> bool {
        peer == self.pattern || self.regex.as_ref().is_some_and(|r| r.is_match(peer))
    }
}

/// The `ip:port` text filters match: IPv4-mapped IPv6 peers (a dual-stack listener) are shown as
/// IPv4, IPv6 peers without brackets (`::1:40000`), as ThingsBoard would print them.
pub fn peer_string(peer: SocketAddr) -> String {
    format!("{}:{}", peer.ip().to_canonical(), peer.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(text: &str) -> String {
        peer_string(text.parse().unwrap())
    }

    #[test]
    fn documented_examples() {
        let any = AddressFilter::new("*:*");
        let port = AddressFilter::new("*:5001");
        let host = AddressFilter::new("192.168.0.120:*");
        let exact = AddressFilter::new("192.168.0.120:5001");
        let p = peer("192.168.0.120:5001");
        let other = peer("192.168.0.121:40000");
        assert!(any.matches(&p) && any.matches(&other));
        assert!(port.matches(&p) && !port.matches(&other));
        assert!(host.matches(&p) && !host.matches(&other));
        assert!(exact.matches(&p) && !exact.matches(&other));
    }

    #[test]
    fn regex_syntax_and_whole_string_match() {
        let alt = AddressFilter::new("192.168.0.(10|11):.*");
        assert!(alt.matches("192.168.0.10:1"));
        assert!(alt.matches("192.168.0.11:65535"));
        assert!(!alt.matches("192.168.0.12:1"));
        // Whole string: a prefix match is not enough.
        assert!(!alt.matches("192.168.0.100:1"));
        let escaped = AddressFilter::new(r"10\.0\.0\.[0-9]+:.*");
        assert!(escaped.matches("10.0.0.7:80"));
        assert!(!escaped.matches("10a0b0c7:80"));
        // `.` is "any character", as in ThingsBoard.
        assert!(AddressFilter::new("127.0.0.1:*").matches("127a0b0c1:9"));
        // Case-sensitive, and the alternation does not escape the anchors.
        assert!(!AddressFilter::new("a|b").matches("ab"));
    }

    #[test]
    fn invalid_regex_falls_back_to_exact_text() {
        let filter = AddressFilter::new("10.0.0.1:(5000");
        assert!(filter.is_exact_only());
        assert!(filter.matches("10.0.0.1:(5000"));
        assert!(!filter.matches("10.0.0.1:5000"));
    }

    #[test]
    fn peers_render_like_thingsboard() {
        assert_eq!(peer("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(peer("[::ffff:10.1.2.3]:7"), "10.1.2.3:7");
        assert_eq!(peer("[::1]:40000"), "::1:40000");
        assert!(AddressFilter::new("::1:*").matches(&peer("[::1]:40000")));
    }

    proptest! {
        /// A pattern without regex metacharacters but `*` behaves like a shell glob.
        #[test]
        fn star_is_a_glob(ip in "[0-9]{1,3}(\\.[0-9]{1,3}){3}", port in 0u16..) {
            let text = format!("{ip}:{port}");
            let by_host = AddressFilter::new(&format!("{ip}:*"));
            let by_port = AddressFilter::new(&format!("*:{port}"));
            prop_assert!(by_host.matches(&text));
            prop_assert!(by_port.matches(&text));
            prop_assert!(AddressFilter::new(&text).matches(&text));
            let other_port = port.wrapping_add(1);
            let exact = AddressFilter::new(&format!("{ip}:{other_port}"));
            prop_assert!(!exact.matches(&text));
        }
    }
}
