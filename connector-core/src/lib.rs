//! The pure core of the socket connector: the `socket.json` model ([`config`]), its build into
//! runtime types, which is the validation ([`build`], [`load`]), the routing decision for a device
//! message ([`route`]), framing, conversion, report strategies and ThingsBoard's gateway API
//! payloads. No sockets, no broker, no disk: the connector adds IO around it, and the operator and
//! the fuzz targets use it alone.

pub mod address_filter;
pub mod build;
pub mod config;
pub mod convert;
pub mod downlink;
pub mod framing;
pub mod gateway_config;
pub mod load;
pub mod report;
pub mod route;
pub mod settings;
pub mod thingsboard;

/// An insertion-ordered map hashed with foldhash, for the maps every message goes through
/// (devices and keys of the uplink batch and of the last values). SipHash, the standard hasher,
/// took about 6 % of the connector's CPU at its ceiling on these short keys; foldhash is seeded
/// per process, which keeps device-chosen names (`deviceNameFrom`) from aiming at one bucket.
pub type FastIndexMap<K, V> = indexmap::IndexMap<K, V, foldhash::fast::RandomState>;

/// The value of `key` in `map`, inserting `make()` first when it is missing. Unlike `entry`, a
/// present key costs no clone of its `Arc` (an atomic increment and decrement on every message).
pub fn get_or_insert_with<'a, V>(
    map: &'a mut FastIndexMap<std::sync::Arc<str>, V>,
    key: &std::sync::Arc<str>,
    make: impl FnOnce() -> V,
) -> &'a mut V {
    match map.get_index_of(key) {
        Some(index) => &mut map[index],
        None => map.entry(key.clone()).or_insert_with(make),
    }
}
