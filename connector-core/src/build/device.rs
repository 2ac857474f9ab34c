//! The runtime device table: what the data path and downlink need of each configured device,
//! parsed once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::address_filter::AddressFilter;
use crate::config::{AttributeRequestConfig, AttributeScope, Encoding, MessageFilterConfig};
use crate::convert::UplinkConverter;
use crate::downlink::expression::{KeyNames, RequestMatcher};

/// One configured device.
#[derive(Debug)]
pub struct Device {
    pub filter: AddressFilter,
    pub converter: UplinkConverter,
    pub attribute_requests: Vec<AttributeRequestRule>,
    /// Only messages of this type belong to the entry.
    pub message_filter: Option<MessageFilter>,
    pub downlink: DownlinkRules,
}

impl Device {
    /// The device's configured ThingsBoard name.
    pub fn name(&self) -> &Arc<str> {
        &self.converter.device.name
    }

    /// The message is of this entry's type (always true without `messageFilter`).
    pub fn accepts(&self, message: &[u8]) -> bool {
        self.message_filter
            .as_ref()
            .is_none_or(|filter| filter.matches(message))
    }

    /// The attribute requests `message` makes: `(scope, keys)` for every matching entry.
    pub fn attribute_requests(&self, message: &[u8]) -> Vec<(AttributeScope, Vec<String>)> {
        self.attribute_requests
            .iter()
            .filter(|rule| rule.matcher.matches(message))
            .map(|rule| (rule.scope, rule.names.keys(message)))
            .collect()
    }
}

/// One `attributeRequests[]` entry, parsed.
#[derive(Debug)]
pub struct AttributeRequestRule {
    pub scope: AttributeScope,
    pub matcher: RequestMatcher,
    pub names: KeyNames,
}

impl AttributeRequestRule {
    /// `Err((key, message))` names the entry's offending key.
    pub fn parse(config: &AttributeRequestConfig) -> Result<Self, (&'static str, String)> {
        let is_constant = |source: &Option<String>| {
            source
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("constant"))
        };
        let matcher = RequestMatcher::parse(
            &config.request_expression,
            is_constant(&config.request_expression_source),
        )
        .map_err(|e| ("requestExpression", e))?;
        let names = KeyNames::parse(
            &config.attribute_name_expression,
            is_constant(&config.attribute_name_expression_source),
        )
        .map_err(|e| ("attributeNameExpression", e))?;
        Ok(Self {
            scope: config.scope,
            matcher,
            names,
        })
    }
}

/// `messageFilter`, parsed.
#[derive(Debug)]
pub struct MessageFilter {
    byte_from: Option<i64>,
    byte_to: Option<i64>,
    equals: Vec<u8>,
}

impl MessageFilter {
    pub fn parse(config: &MessageFilterConfig) -> Result<Self, String> {
        let equals = crate::framing::parse_bytes(&config.equals)?;
        if equals.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self {
            byte_from: config.byte_from,
            byte_to: config.byte_to,
            equals,
        })
    }

    pub fn matches(&self, message: &[u8]) -> bool {
        let to = self.byte_to.or_else(|| {
            Some(
                self.byte_from
                    .unwrap_or(0)
                    .saturating_add(self.equals.len() as i64),
            )
        });
        crate::convert::slice::byte_slice(message, self.byte_from, to) == self.equals.as_slice()
    }
}

/// What ThingsBoard may send to a device: shared-attribute updates and RPC methods.
#[derive(Debug, Clone, PartialEq)]
pub struct DownlinkRules {
    /// The device's encoding, for `set` and anything without an encoding of its own.
    pub encoding: Encoding,
    pub attribute_updates: Vec<AttributeUpdateRule>,
    pub rpc: Vec<RpcRule>,
}

impl DownlinkRules {
    pub fn rpc(&self, method: &str) -> Option<&RpcRule> {
        self.rpc.iter().find(|rule| rule.method == method)
    }
}

/// One `attributeUpdates[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeUpdateRule {
    pub attribute: String,
    pub encoding: Encoding,
}

/// One `serverSideRpc[]` entry (`methodProcessing` is always `write`).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRule {
    pub method: String,
    pub with_response: bool,
    pub encoding: Encoding,
    /// Wait this long for the device's answer and return it.
    pub response_timeout: Option<Duration>,
}

/// Indices of the devices a peer feeds, in configuration order.
pub type DeviceSet = Vec<usize>;

/// The configured devices, in configuration order.
#[derive(Debug, Default)]
pub struct DeviceTable {
    devices: Vec<Device>,
    /// First device of each name (downlink addresses devices by name).
    by_name: HashMap<Arc<str>, usize>,
}

impl DeviceTable {
    pub fn new(devices: Vec<Device>) -> Self {
        let mut by_name = HashMap::with_capacity(devices.len());
        for (index, device) in devices.iter().enumerate() {
            by_name.entry(device.name().clone()).or_insert(index);
        }
        Self { devices, by_name }
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn device(&self, index: usize) -> Option<&Device> {
        self.devices.get(index)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The first device with this ThingsBoard name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Every device whose filter matches the peer (ThingsBoard gives the message to all of them).
    pub fn matching(&self, peer: &str) -> DeviceSet {
        self.devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.filter.matches(peer))
            .map(|(i, _)| i)
            .collect()
    }
}
