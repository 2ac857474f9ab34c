//! The connector configuration as written in a ThingsBoard gateway `socket.json` (current format).
//!
//! Every field's doc comment is also its JSON-schema description, which the operator's CRD embeds,
//! so `kubectl explain` shows the same text. The old flat format is rewritten into this shape by
//! [`super::load`] before deserialization, exactly as ThingsBoard's backward-compatibility adapter does.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A ThingsBoard IoT Gateway socket connector configuration (`socket.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorConfig {
    /// Connector name: the `connectorName` attribute of every device, the prefix of remote-log keys.
    /// ThingsBoard replaces it with `connectors[].name` of `tb_gateway.json`; here `--connector-name`
    /// does that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Connector id written by the ThingsBoard gateway. Accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Log level of the connector: TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL or NONE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Also send log records at or above `logLevel` to ThingsBoard as gateway telemetry `<name>_LOGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_remote_logging: Option<bool>,
    /// Connector-level report strategy; device and key strategies override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_strategy: Option<ReportStrategyConfig>,
    /// Version of the gateway that wrote the file. Accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Deprecated in ThingsBoard (ignored there); here `true` means the connector-level report
    /// strategy defaults to ON_CHANGE, as the ThingsBoard docs promise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_data_only_on_change: Option<bool>,
    /// Extension: where the built-in `set` and `socket_set` RPCs may also write, besides the
    /// peers a device's address filter matches (same grammar as `address`, e.g. `10.0.5.*:*`).
    /// ThingsBoard writes anywhere; here any other address is refused, so that RPC rights in
    /// ThingsBoard are not a way into the connector's network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_set_allow: Vec<String>,
    /// The local socket the connector listens on.
    pub socket: SocketConfig,
    /// Devices: which peers they are and how their bytes become telemetry and attributes.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// The listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketConfig {
    /// `TCP` or `UDP` (case-insensitive).
    #[serde(rename = "type", default)]
    pub kind: SocketKind,
    /// Local address to bind, IPv4 or IPv6 (`0.0.0.0` or `::` for all interfaces).
    #[serde(default = "default_bind_address")]
    pub address: String,
    /// Local port to bind (0 picks a free port, logged at start).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Bytes read at most per read (TCP) or per datagram (UDP); without framing one read is one
    /// message. Default 1024. ThingsBoard ignores this key by a bug; here it is honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_size: Option<u32>,
    /// The key ThingsBoard's code actually reads; `bufferSize` wins when both are given.
    #[serde(
        rename = "buffer_size",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub buffer_size_legacy: Option<u32>,
    /// Extension: how the byte stream is cut into messages (delimiter, fixed size, length field,
    /// start/end markers). Absent: each read or datagram is one message, as in ThingsBoard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framing: Option<crate::framing::FramingConfig>,
    /// Extension: `server` (default, as in ThingsBoard) listens on address:port; `client`
    /// connects out to a device that is itself a TCP server at address:port, and reconnects
    /// with backoff when the connection drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SocketMode>,
    /// Extension, client mode: bytes sent right after each connect (text with escapes or `0x`
    /// hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<String>,
    /// Extension, client mode: bytes sent every `pollIntervalMs` while connected (a request for
    /// data, for devices that only answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_payload: Option<String>,
    /// Extension, client mode: poll period in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    /// Extension, client mode: first reconnect delay in milliseconds (default 500), doubling up
    /// to 30 s, with jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_delay_ms: Option<u64>,
    /// Extension: TLS for device connections (TCP server mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Extension, TCP server: most device connections open at once; further ones are closed
    /// when accepted and counted. Default: no limit (as ThingsBoard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Extension, TCP server: most connections open at once from one IP address. Default: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_peer: Option<u32>,
    /// Extension, TCP: a connection that sends nothing for this many milliseconds is closed.
    /// Default: never (as ThingsBoard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Extension, UDP: the socket's kernel receive buffer in bytes (`SO_RCVBUF`), which holds
    /// datagrams while the connector is busy; a full one drops them in the kernel. Default
    /// 4 MiB; the kernel caps it at `net.core.rmem_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_buffer_size: Option<u32>,
}

/// TLS settings of the device listener (PEM files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// The connector's certificate chain.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// When set, devices must present a client certificate signed by this CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// Who opens the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SocketMode {
    #[default]
    Server,
    Client,
}

impl SocketConfig {
    /// The effective read size.
    pub fn read_size(&self) -> usize {
        self.buffer_size
            .or(self.buffer_size_legacy)
            .unwrap_or(DEFAULT_BUFFER_SIZE) as usize
    }
}

pub const DEFAULT_BUFFER_SIZE: u32 = 1024;
pub const DEFAULT_PORT: u16 = 50000;
pub const DEFAULT_BIND_ADDRESS: &str = "127.0.0.1";

fn default_bind_address() -> String {
    DEFAULT_BIND_ADDRESS.to_owned()
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_device_type() -> String {
    "default".to_owned()
}

/// One ThingsBoard device fed by peers matching its address filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Address filter on the peer's `ip:port`: `*` is any text, the rest is a regular expression
    /// matched against the whole string (`*:*`, `192.168.0.10:*`, `10\.0\.0\.[0-9]+:.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Same as `address`, and wins over it when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_filter: Option<String>,
    /// Device name in ThingsBoard.
    pub device_name: String,
    /// Device profile in ThingsBoard (sent in `v1/gateway/connect`).
    #[serde(default = "default_device_type")]
    pub device_type: String,
    /// How byte slices become text: utf-8 (default), ascii, latin-1, hex, utf-16, utf-16-le,
    /// utf-16-be, utf-32, utf-32-le, utf-32-be.
    #[serde(default)]
    pub encoding: Encoding,
    /// Uplink converter class of the ThingsBoard gateway; only the default
    /// `BytesSocketUplinkConverter` exists here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converter: Option<String>,
    /// Device-level report strategy; key strategies override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_strategy: Option<ReportStrategyConfig>,
    /// Extension: this entry applies only to messages whose bytes `byteFrom..byteTo` equal
    /// `equals` (a message type), so several entries can describe several layouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_filter: Option<MessageFilterConfig>,
    /// Extension: take the device name from the message (many devices on one connection);
    /// `deviceName` is used when the slice is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name_from: Option<IdentitySliceConfig>,
    /// Extension: take the device type (profile) from the message; `deviceType` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type_from: Option<IdentitySliceConfig>,
    /// Time-series keys cut from each message.
    #[serde(default)]
    pub telemetry: Vec<KeyConfig>,
    /// Client attributes cut from each message.
    #[serde(default)]
    pub attributes: Vec<KeyConfig>,
    /// Messages that ask ThingsBoard for attribute values.
    #[serde(default)]
    pub attribute_requests: Vec<AttributeRequestConfig>,
    /// Shared attributes forwarded to the device when they change in ThingsBoard.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPC methods forwarded to the device.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

impl DeviceConfig {
    /// The address filter, `addressFilter` taking precedence over `address` as in ThingsBoard.
    pub fn filter_pattern(&self) -> Option<&str> {
        self.address_filter.as_deref().or(self.address.as_deref())
    }
}

/// Selects messages by a byte pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageFilterConfig {
    /// First byte compared (negative counts from the end; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_from: Option<i64>,
    /// End of the compared bytes (exclusive; `-1` is the end, as for keys; default: as many
    /// bytes as `equals` has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_to: Option<i64>,
    /// The bytes, as text with escapes (`\x01`) or hex (`0x0102`).
    pub equals: String,
}

/// A slice of the message naming the device (or its type), decoded in the device's encoding and
/// trimmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySliceConfig {
    /// First byte (negative counts from the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_from: Option<i64>,
    /// End, exclusive (`-1` is the end, as for keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_to: Option<i64>,
    /// Text put before the decoded slice, e.g. `Meter ` gives `Meter 0042`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// One telemetry or attribute key: a byte slice of the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyConfig {
    /// Key name in ThingsBoard.
    pub key: String,
    /// First byte of the slice (negative counts from the end); absent means the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_from: Option<i64>,
    /// End of the slice, exclusive (negative counts from the end); `-1` means "to the end,
    /// including the last byte"; absent means the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_to: Option<i64>,
    /// Key-level report strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_strategy: Option<ReportStrategyConfig>,
    /// Extension: decode the slice as a typed value instead of text: `int`/`uint` (1-8 bytes,
    /// the slice's width), `int8`...`int64`, `uint8`...`uint64`, `float` (4 or 8 bytes),
    /// `float32`, `float64`, `bool`, `bits`, `string` or `hex`. Absent: a string, as in
    /// ThingsBoard.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<super::ValueType>,
    /// Extension: byte order of numbers: `big` (default), `little`, `big-word-swap` (16-bit words
    /// in little order, bytes in each word big: CDAB), `little-word-swap` (BADC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_order: Option<super::NumberOrder>,
    /// Extension: numbers are multiplied by this (the result is a float).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Extension: added to numbers after `scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Extension, `bits`: first bit, counted from the most significant bit of the slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_offset: Option<u32>,
    /// Extension, `bits`: number of bits (1-64); 1 gives a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_length: Option<u32>,
}

/// When a datapoint is sent to ThingsBoard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportStrategyConfig {
    /// ON_RECEIVED, ON_CHANGE, ON_REPORT_PERIOD, ON_CHANGE_OR_REPORT_PERIOD or DISABLED
    /// (case-insensitive).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ReportStrategyKind>,
    /// Period in milliseconds of the two period strategies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_period: Option<u64>,
    /// Seconds a remembered value lives without updates (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Accepted for compatibility; ThingsBoard does not use it either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_function: Option<String>,
}

/// An attribute request: a message that matches `requestExpression` asks ThingsBoard for the
/// attributes named by `attributeNameExpression`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeRequestConfig {
    /// `shared` or `client`.
    #[serde(rename = "type", default)]
    pub scope: AttributeScope,
    /// `${[from:to]==literal}`: the message is a request when that slice equals the literal.
    pub request_expression: String,
    /// Slices naming the requested keys, e.g. `[4:19][20:]`.
    pub attribute_name_expression: String,
    /// Written by the ThingsBoard UI; accepted, expressions are always parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_expression_source: Option<String>,
    /// Written by the ThingsBoard UI; accepted, expressions are always parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_name_expression_source: Option<String>,
}

/// Forwards one shared attribute to the device when it changes in ThingsBoard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// Shared attribute key in ThingsBoard (exact match).
    #[serde(rename = "attributeOnThingsBoard")]
    pub attribute_on_thingsboard: String,
    /// Encoding of the bytes written to the device; the device's encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// A server-side RPC method forwarded to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// RPC method name.
    #[serde(rename = "methodRPC")]
    pub method_rpc: String,
    /// Reply to ThingsBoard with the outcome.
    #[serde(default)]
    pub with_response: bool,
    /// `write` (the default): send the RPC params to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_processing: Option<String>,
    /// Encoding of the bytes written to the device; the device's encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Extension: wait this many milliseconds for the device's next message after the write and
    /// return it (decoded with the encoding) as the RPC result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_ms: Option<u64>,
}

/// Attribute scope of an attribute request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttributeScope {
    #[default]
    Shared,
    Client,
}

/// Defines a string enum that deserializes case-insensitively (as ThingsBoard's `.upper()` does),
/// serializes in its canonical spelling and publishes a schema that accepts any letter case.
macro_rules! case_insensitive_enum {
    ($(#[$meta:meta])* $name:ident, $schema_name:literal { $($(#[$variant_meta:meta])* $variant:ident => $canonical:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl $name {
            /// Canonical spellings, for error messages and the schema.
            pub const NAMES: &'static [&'static str] = &[$($canonical),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $canonical),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                let upper = text.trim().to_ascii_uppercase();
                $(if upper == $canonical $(|| upper == $alias)* { return Some(Self::$variant); })+
                None
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown value {text:?}, expected one of {}",
                        Self::NAMES.join(", ")
                    ))
                })
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($schema_name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": case_insensitive_pattern(&[$($canonical $(, $alias)*),+]),
                })
            }
        }
    };
}

/// An anchored regex (ECMA and RE2 compatible, so usable in a CRD) accepting `names` in any case.
fn case_insensitive_pattern(names: &[&str]) -> String {
    let alternatives: Vec<String> = names
        .iter()
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else {
                        regex::escape(&c.to_string())
                    }
                })
                .collect()
        })
        .collect();
    format!("^({})$", alternatives.join("|"))
}

case_insensitive_enum!(
    /// Transport of the listening socket.
    #[derive(Default)]
    SocketKind, "SocketKind" { #[default] Tcp => "TCP", Udp => "UDP" }
);

case_insensitive_enum!(
    /// Report strategy type.
    ReportStrategyKind, "ReportStrategyKind" {
        OnReceived => "ON_RECEIVED",
        OnChange => "ON_CHANGE",
        OnReportPeriod => "ON_REPORT_PERIOD",
        OnChangeOrReportPeriod => "ON_CHANGE_OR_REPORT_PERIOD",
        Disabled => "DISABLED",
    }
);

case_insensitive_enum!(
    /// Log level names of the ThingsBoard gateway (Python logging names).
    LogLevel, "LogLevel" {
        Trace => "TRACE",
        Debug => "DEBUG",
        Info => "INFO",
        Warning => "WARNING" | "WARN",
        Error => "ERROR",
        Critical => "CRITICAL" | "FATAL",
        None => "NONE",
    }
);

/// Text encoding of a device's bytes. Names follow Python's codec names, in any case, with `_`
/// or `-` (`UTF_8`, `utf8`, `Latin-1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    #[default]
    Utf8,
    Ascii,
    Latin1,
    Hex,
    Utf16,
    Utf16Le,
    Utf16Be,
    Utf32,
    Utf32Le,
    Utf32Be,
}

impl Encoding {
    pub const ALL: &'static [Self] = &[
        Self::Utf8,
        Self::Ascii,
        Self::Latin1,
        Self::Hex,
        Self::Utf16,
        Self::Utf16Le,
        Self::Utf16Be,
        Self::Utf32,
        Self::Utf32Le,
        Self::Utf32Be,
    ];

    pub const NAMES: &'static [&'static str] = &[
        "utf-8",
        "ascii",
        "latin-1",
        "hex",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Ascii => "ascii",
            Self::Latin1 => "latin-1",
            Self::Hex => "hex",
            Self::Utf16 => "utf-16",
            Self::Utf16Le => "utf-16-le",
            Self::Utf16Be => "utf-16-be",
            Self::Utf32 => "utf-32",
            Self::Utf32Le => "utf-32-le",
            Self::Utf32Be => "utf-32-be",
        }
    }

    /// Parses a codec name the way Python normalizes them: any case, `_` or `-` or nothing
    /// between the parts (`UTF_8`, `utf8`, `Latin-1`, `utf_16_le`).
    pub fn parse(text: &str) -> Option<Self> {
        let compact: String = text
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let encoding = match compact.as_str() {
            "utf8" => Self::Utf8,
            "ascii" => Self::Ascii,
            "latin1" | "iso88591" => Self::Latin1,
            "hex" => Self::Hex,
            "utf16" => Self::Utf16,
            "utf16le" => Self::Utf16Le,
            "utf16be" => Self::Utf16Be,
            "utf32" => Self::Utf32,
            "utf32le" => Self::Utf32Le,
            "utf32be" => Self::Utf32Be,
            _ => return None,
        };
        Some(encoding)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Encoding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown encoding {text:?}, expected one of {}",
                Self::NAMES.join(", ")
            ))
        })
    }
}

impl JsonSchema for Encoding {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Encoding")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Aliases in other spellings are accepted by the loader; the schema lists the canonical
        // names in any case, with `_` or `-`.
        json_schema!({
            "type": "string",
            "pattern": r"^(?:[Uu][Tt][Ff][-_]?(?:8|(?:16|32)(?:[-_]?(?:[Ll][Ee]|[Bb][Ee]))?)|[Aa][Ss][Cc][Ii][Ii]|[Ll][Aa][Tt][Ii][Nn][-_]?1|[Ii][Ss][Oo][-_]?8859[-_]1|[Hh][Ee][Xx])$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_enums_parse_any_case_and_aliases() {
        assert_eq!(SocketKind::parse("udp"), Some(SocketKind::Udp));
        assert_eq!(SocketKind::parse("Tcp"), Some(SocketKind::Tcp));
        assert_eq!(SocketKind::parse("sctp"), None);
        assert_eq!(LogLevel::parse("warn"), Some(LogLevel::Warning));
        assert_eq!(
            ReportStrategyKind::parse("on_change"),
            Some(ReportStrategyKind::OnChange)
        );
    }

    #[test]
    fn schema_pattern_accepts_exactly_the_parseable_names() {
        let pattern = regex::Regex::new(&case_insensitive_pattern(&["TCP", "UDP"])).unwrap();
        for name in ["TCP", "tcp", "uDp"] {
            assert!(pattern.is_match(name), "{name}");
        }
        for name in ["TCPX", "tc", "", " tcp"] {
            assert!(!pattern.is_match(name), "{name}");
        }
    }

    #[test]
    fn encoding_schema_pattern_agrees_with_parser() {
        let schema = Encoding::json_schema(&mut SchemaGenerator::default());
        let pattern = schema
            .get("pattern")
            .and_then(|p| p.as_str())
            .expect("pattern");
        let pattern = regex::Regex::new(pattern).unwrap();
        for name in
            Encoding::NAMES
                .iter()
                .chain(&["UTF_8", "utf8", "Latin-1", "utf_16_le", "UTF16BE"])
        {
            assert!(pattern.is_match(name), "schema rejects {name}");
            assert!(Encoding::parse(name).is_some(), "parser rejects {name}");
        }
        for name in ["utf-7", "cp1252", "utf-8-sig", "utf8le"] {
            assert!(!pattern.is_match(name), "schema accepts {name}");
            assert!(Encoding::parse(name).is_none(), "parser accepts {name}");
        }
    }
}
