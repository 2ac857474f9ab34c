//! The effective report strategy of a datapoint, resolved once from ThingsBoard's cascade
//! (key > device > connector > gateway) when the configuration is built.

use super::{ReportStrategyConfig, ReportStrategyKind};

/// Default life of a remembered value: 86400 s, as in ThingsBoard.
pub const DEFAULT_TTL_MS: u64 = 86_400_000;
/// Default period of the global strategy.
pub const DEFAULT_GLOBAL_PERIOD_MS: u64 = 10_000;

/// An effective strategy, attached to each datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportStrategy {
    pub kind: ReportStrategyKind,
    pub period_ms: u64,
    pub ttl_ms: u64,
}

impl ReportStrategy {
    pub const ON_RECEIVED: Self = Self {
        kind: ReportStrategyKind::OnReceived,
        period_ms: 0,
        ttl_ms: DEFAULT_TTL_MS,
    };

    /// A connector, device or key level. An object without `type` is "not specified" (the loader
    /// has already rejected one with a period but no type, and period types without a period).
    pub fn from_level(config: &ReportStrategyConfig) -> Option<Self> {
        let kind = config.kind?;
        Some(Self {
            kind,
            period_ms: config.report_period.unwrap_or(0),
            ttl_ms: config
                .ttl
                .map_or(DEFAULT_TTL_MS, |s| s.saturating_mul(1000)),
        })
    }

    /// The gateway-wide strategy (`thingsboard.reportStrategy` of `tb_gateway.json`): defaults
    /// filled in, and the period shortened by 10 ms as ThingsBoard does.
    pub fn global(config: Option<&ReportStrategyConfig>) -> Self {
        let kind = config
            .and_then(|c| c.kind)
            .unwrap_or(ReportStrategyKind::OnReceived);
        let period = config
            .and_then(|c| c.report_period)
            .unwrap_or(DEFAULT_GLOBAL_PERIOD_MS);
        Self {
            kind,
            period_ms: period.saturating_sub(10).max(1),
            ttl_ms: config
                .and_then(|c| c.ttl)
                .map_or(DEFAULT_TTL_MS, |s| s.saturating_mul(1000)),
        }
    }

    /// The strategy that governs a datapoint: its file's level, else the gateway's. A DISABLED
    /// gateway strategy turns report strategies off entirely: everything is forwarded, as in
    /// ThingsBoard.
    pub fn effective(level: Option<Self>, global: Self) -> Self {
        if global.kind == ReportStrategyKind::Disabled {
            return Self::ON_RECEIVED;
        }
        level.unwrap_or(global)
    }

    pub fn is_periodic(&self) -> bool {
        matches!(
            self.kind,
            ReportStrategyKind::OnReportPeriod | ReportStrategyKind::OnChangeOrReportPeriod
        )
    }
}

/// The levels of ThingsBoard's cascade that a connector's file holds: key > device > connector.
/// The last level, the gateway's strategy, belongs to the gateway's settings and is applied by
/// [`ReportStrategy::effective`].
#[derive(Debug, Clone, Copy)]
pub struct StrategyCascade {
    connector: Option<ReportStrategy>,
}

impl StrategyCascade {
    pub fn new(connector: Option<&ReportStrategyConfig>) -> Self {
        Self {
            connector: connector.and_then(ReportStrategy::from_level),
        }
    }

    /// The most specific level that is given, if any.
    pub fn resolve(
        &self,
        device: Option<&ReportStrategyConfig>,
        key: Option<&ReportStrategyConfig>,
    ) -> Option<ReportStrategy> {
        key.and_then(ReportStrategy::from_level)
            .or_else(|| device.and_then(ReportStrategy::from_level))
            .or(self.connector)
    }
}
