//! The routing decision for one device message: which of the devices a peer feeds take it, and
//! whether each turns it into an attribute request or into data. Pure; the transport, `validate`,
//! the fuzzers and the tests all route through [`route`].

use std::sync::Arc;

use crate::build::DeviceTable;
use crate::config::AttributeScope;
use crate::convert::ConvertedData;

/// An attribute request found in a device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeRequest {
    /// The device's configured ThingsBoard name.
    pub device: Arc<str>,
    pub scope: AttributeScope,
    pub keys: Vec<String>,
}

/// What one device made of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// The message asks ThingsBoard for attributes; as in ThingsBoard it is then not data for
    /// this device.
    AttributeRequests(Vec<AttributeRequest>),
    /// The converted data (possibly empty: a device without keys, or values that did not decode).
    Data(ConvertedData),
}

/// Routes `message` from a peer that feeds `devices` (indices into `table`): one entry per device
/// that accepts the message (its `messageFilter` matches), in configuration order.
pub fn route<'a>(
    table: &'a DeviceTable,
    devices: &'a [usize],
    message: &'a [u8],
    ts_ms: i64,
) -> impl Iterator<Item = (usize, Routed)> + 'a {
    devices.iter().filter_map(move |&index| {
        let device = table.device(index)?;
        if !device.accepts(message) {
            return None;
        }
        let requests = device.attribute_requests(message);
        if !requests.is_empty() {
            let requests = requests
                .into_iter()
                .map(|(scope, keys)| AttributeRequest {
                    device: device.name().clone(),
                    scope,
                    keys,
                })
                .collect();
            return Some((index, Routed::AttributeRequests(requests)));
        }
        Some((
            index,
            Routed::Data(device.converter.convert(message, ts_ms)),
        ))
    })
}
