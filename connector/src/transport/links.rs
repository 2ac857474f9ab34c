//! Where downlink bytes for a device go: the last peer that sent data for it (as in ThingsBoard),
//! but only over a connection that is still open (TCP) or from the bound socket (UDP). Also
//! carries a device's next message to an RPC that waits for the device's answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use indexmap::IndexMap;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use connector_core::build::DeviceTable;
use connector_core::config::SocketKind;

/// Why downlink bytes did not reach a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownlinkError {
    #[error("device has not sent any data yet, so there is no connection to write to")]
    NeverSeen,
    #[error("device is not connected: its last connection ({peer}) is closed")]
    NotConnected { peer: SocketAddr },
    #[error("no open connection from {peer}")]
    NoConnection { peer: SocketAddr },
    #[error("writing to {peer} failed: {reason}")]
    WriteFailed { peer: SocketAddr, reason: String },
    #[error("writing to {peer} timed out")]
    WriteTimeout { peer: SocketAddr },
}

/// The write half of an open device connection. Downlink writers take turns on the lock (tokio's
/// is fair, so writes keep their order); a writer task and channel per connection cost more
/// memory than a fleet of mostly idle connections should pay for (docs/benchmarks.md).
pub type DeviceWriter = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// A device ThingsBoard addresses: the configured device (its index) and, for a name read from
/// frames, the peer that name last sent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressed {
    pub index: usize,
    pub peer: Option<SocketAddr>,
}

/// How long a downlink write may wait for a slow device.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct DeviceLinks {
    kind: SocketKind,
    last_peer: Mutex<Vec<Option<SocketAddr>>>,
    /// Names read from frames (`deviceNameFrom`): the configured device and where each name last
    /// sent from, so ThingsBoard can address them too. The oldest are forgotten beyond
    /// `max_dynamic`.
    dynamic: Mutex<IndexMap<Arc<str>, (usize, SocketAddr)>>,
    max_dynamic: usize,
    tcp: Mutex<HashMap<SocketAddr, DeviceWriter>>,
    /// The bound UDP socket downlink datagrams leave from; none while it is closed.
    udp: ArcSwapOption<UdpSocket>,
    replies: Mutex<HashMap<SocketAddr, oneshot::Sender<Bytes>>>,
    /// Fast path for readers: no lock when nobody waits for a device reply.
    waiting_replies: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop downlink: the maps stay consistent entry by entry.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DeviceLinks {
    pub fn new(kind: SocketKind, device_count: usize, max_dynamic: usize) -> Self {
        Self {
            kind,
            last_peer: Mutex::new(vec![None; device_count]),
            dynamic: Mutex::default(),
            max_dynamic: max_dynamic.max(1),
            tcp: Mutex::default(),
            udp: ArcSwapOption::empty(),
            replies: Mutex::default(),
            waiting_replies: AtomicUsize::new(0),
        }
    }

    /// Remembers `peer` as the downlink target of the devices it just sent data for.
    pub fn seen(&self, devices: &[usize], peer: SocketAddr) {
        let mut last = lock(&self.last_peer);
        for &device in devices {
            if let Some(slot) = last.get_mut(device) {
                *slot = Some(peer);
            }
        }
    }

    /// After a reload: device `i` of the new table is `old_index[i]` of the old one (matched by
    /// name), so downlink keeps going to where each device last sent from.
    pub fn reindex(&self, old_index: &[Option<usize>]) {
        let mut last = lock(&self.last_peer);
        let renumbered = old_index
            .iter()
            .map(|old| old.and_then(|i| last.get(i).copied().flatten()))
            .collect();
        *last = renumbered;
        drop(last);
        let new_of_old: HashMap<usize, usize> = old_index
            .iter()
            .enumerate()
            .filter_map(|(new, old)| old.map(|old| (old, new)))
            .collect();
        lock(&self.dynamic).retain(|_, (device, _)| match new_of_old.get(device) {
            Some(new) => {
                *device = *new;
                true
            }
            None => false,
        });
    }

    /// Where downlink for a device goes: its configured name, or a name read from its frames.
    pub fn address(&self, devices: &DeviceTable, name: &str) -> Option<Addressed> {
        if let Some(index) = devices.find(name) {
            return Some(Addressed { index, peer: None });
        }
        self.dynamic(name).map(|(index, peer)| Addressed {
            index,
            peer: Some(peer),
        })
    }

    /// Remembers a name read from a frame of configured device `device`, sent from `peer`.
    pub fn seen_dynamic(&self, name: &Arc<str>, device: usize, peer: SocketAddr) {
        let mut dynamic = lock(&self.dynamic);
        if let Some(entry) = dynamic.get_mut(name) {
            *entry = (device, peer);
            return;
        }
        if dynamic.len() >= self.max_dynamic {
            dynamic.shift_remove_index(0);
        }
        dynamic.insert(name.clone(), (device, peer));
    }

    /// Devices that sent data since start (or were seen before a reload): configured ones by
    /// their name, and the names read from frames.
    pub fn seen_names(&self, devices: &DeviceTable) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = lock(&self.last_peer)
            .iter()
            .enumerate()
            .filter(|(_, peer)| peer.is_some())
            .filter_map(|(index, _)| devices.device(index).map(|d| d.name().clone()))
            .collect();
        let configured: std::collections::HashSet<Arc<str>> = names.iter().cloned().collect();
        names.extend(
            lock(&self.dynamic)
                .keys()
                .filter(|name| !configured.contains(*name))
                .cloned(),
        );
        names
    }

    /// The configured device and last peer of a name read from frames.
    pub fn dynamic(&self, name: &str) -> Option<(usize, SocketAddr)> {
        lock(&self.dynamic).get(name).copied()
    }

    pub fn register_tcp(&self, peer: SocketAddr, writer: DeviceWriter) {
        lock(&self.tcp).insert(peer, writer);
    }

    pub fn unregister_tcp(&self, peer: SocketAddr) {
        lock(&self.tcp).remove(&peer);
        if let Some(waiter) = lock(&self.replies).remove(&peer) {
            self.waiting_replies.fetch_sub(1, Ordering::Relaxed);
            drop(waiter);
        }
    }

    pub fn set_udp(&self, socket: Arc<UdpSocket>) {
        self.udp.store(Some(socket));
    }

    /// The UDP socket is closed: nothing keeps it open for downlink.
    pub fn clear_udp(&self) {
        self.udp.store(None);
    }

    /// The peer a device's downlink goes to.
    pub fn target(&self, device: usize) -> Result<SocketAddr, DownlinkError> {
        lock(&self.last_peer)
            .get(device)
            .copied()
            .flatten()
            .ok_or(DownlinkError::NeverSeen)
    }

    /// The peer an addressed device's downlink goes to.
    pub fn target_of(&self, device: Addressed) -> Result<SocketAddr, DownlinkError> {
        device.peer.map_or_else(|| self.target(device.index), Ok)
    }

    /// Writes to the device's current connection; returns the peer written to.
    pub async fn write_to_device(
        &self,
        device: Addressed,
        bytes: Bytes,
    ) -> Result<SocketAddr, DownlinkError> {
        let peer = self.target_of(device)?;
        match self.write_to_peer(peer, bytes).await {
            Err(DownlinkError::NoConnection { peer }) => Err(DownlinkError::NotConnected { peer }),
            other => other.map(|()| peer),
        }
    }

    /// Writes to an open TCP connection from `peer`, or sends a datagram to it from the bound
    /// UDP socket.
    pub async fn write_to_peer(&self, peer: SocketAddr, bytes: Bytes) -> Result<(), DownlinkError> {
        match self.kind {
            SocketKind::Tcp => {
                let writer = lock(&self.tcp)
                    .get(&peer)
                    .cloned()
                    .ok_or(DownlinkError::NoConnection { peer })?;
                let write = async {
                    let mut writer = writer.lock().await;
                    let written = match writer.write_all(&bytes).await {
                        Ok(()) => writer.flush().await,
                        failed => failed,
                    };
                    written.map_err(|e| DownlinkError::WriteFailed {
                        peer,
                        reason: e.to_string(),
                    })
                };
                tokio::time::timeout(WRITE_TIMEOUT, write)
                    .await
                    .map_err(|_| DownlinkError::WriteTimeout { peer })?
            }
            SocketKind::Udp => {
                let socket = self
                    .udp
                    .load_full()
                    .ok_or(DownlinkError::NoConnection { peer })?;
                socket.send_to(&bytes, peer).await.map(|_| ()).map_err(|e| {
                    DownlinkError::WriteFailed {
                        peer,
                        reason: e.to_string(),
                    }
                })
            }
        }
    }

    /// The next message from `peer` goes to the returned receiver instead of the data path.
    pub fn expect_reply(&self, peer: SocketAddr) -> oneshot::Receiver<Bytes> {
        let (tx, rx) = oneshot::channel();
        if lock(&self.replies).insert(peer, tx).is_none() {
            self.waiting_replies.fetch_add(1, Ordering::Relaxed);
        }
        rx
    }

    /// Stops waiting for a reply from `peer` (timeout).
    pub fn cancel_reply(&self, peer: SocketAddr) {
        if lock(&self.replies).remove(&peer).is_some() {
            self.waiting_replies.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands `message` to an RPC waiting for `peer`'s answer; false when none waits.
    pub fn deliver_reply(&self, peer: SocketAddr, message: &[u8]) -> bool {
        if self.waiting_replies.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let Some(waiter) = lock(&self.replies).remove(&peer) else {
            return false;
        };
        self.waiting_replies.fetch_sub(1, Ordering::Relaxed);
        waiter.send(Bytes::copy_from_slice(message)).is_ok()
    }
}
