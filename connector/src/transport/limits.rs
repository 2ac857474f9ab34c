//! Device-side connection limits: how many TCP connections in total and per peer IP, and how
//! long one may stay silent. The bookkeeping is pure, so it is tested without sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use connector_core::config::SocketConfig;

use crate::events::RejectReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionLimits {
    pub max_total: Option<usize>,
    pub max_per_peer: Option<usize>,
    pub idle_timeout: Option<Duration>,
}

impl ConnectionLimits {
    pub fn from_config(socket: &SocketConfig) -> Self {
        Self {
            max_total: socket.max_connections.map(|n| n as usize),
            max_per_peer: socket.max_connections_per_peer.map(|n| n as usize),
            idle_timeout: socket
                .idle_timeout_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        }
    }
}

/// Open connections, in total and per IP.
#[derive(Debug, Default)]
pub struct OpenConnections {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

impl OpenConnections {
    /// Counts the connection in, or says which limit refuses it.
    pub fn admit(&mut self, limits: &ConnectionLimits, ip: IpAddr) -> Result<(), RejectReason> {
        if limits.max_total.is_some_and(|max| self.total >= max) {
            return Err(RejectReason::MaxConnections);
        }
        let from_peer = self.per_peer.get(&ip).copied().unwrap_or(0);
        if limits.max_per_peer.is_some_and(|max| from_peer >= max) {
            return Err(RejectReason::MaxConnectionsPerPeer);
        }
        self.total += 1;
        *self.per_peer.entry(ip).or_default() += 1;
        Ok(())
    }

    /// A connection admitted earlier has closed.
    pub fn release(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(count) = self.per_peer.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn total_and_per_peer_limits_refuse_and_free_up_again() {
        let limits = ConnectionLimits {
            max_total: Some(3),
            max_per_peer: Some(2),
            idle_timeout: None,
        };
        let mut open = OpenConnections::default();
        assert_eq!(open.admit(&limits, ip(1)), Ok(()));
        assert_eq!(open.admit(&limits, ip(1)), Ok(()));
        assert_eq!(
            open.admit(&limits, ip(1)),
            Err(RejectReason::MaxConnectionsPerPeer)
        );
        assert_eq!(open.admit(&limits, ip(2)), Ok(()));
        assert_eq!(
            open.admit(&limits, ip(3)),
            Err(RejectReason::MaxConnections)
        );
        open.release(ip(1));
        assert_eq!(open.admit(&limits, ip(3)), Ok(()));
        assert_eq!(open.total(), 3);
        open.release(ip(1));
        open.release(ip(2));
        open.release(ip(3));
        assert_eq!(open.total(), 0);
        assert!(open.per_peer.is_empty(), "no entry kept for closed peers");
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut open = OpenConnections::default();
        for n in 0..1000u16 {
            let peer = IpAddr::from([127, 0, (n >> 8) as u8, n as u8]);
            assert_eq!(open.admit(&ConnectionLimits::default(), peer), Ok(()));
        }
    }

    #[test]
    fn limits_come_from_the_socket_section() {
        let socket: SocketConfig = serde_json::from_value(serde_json::json!({
            "maxConnections": 100, "maxConnectionsPerPeer": 4, "idleTimeoutMs": 30000
        }))
        .expect("socket section");
        let limits = ConnectionLimits::from_config(&socket);
        assert_eq!(limits.max_total, Some(100));
        assert_eq!(limits.max_per_peer, Some(4));
        assert_eq!(limits.idle_timeout, Some(Duration::from_secs(30)));
    }
}
