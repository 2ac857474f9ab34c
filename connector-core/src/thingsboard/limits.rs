//! ThingsBoard's session limits: the answer to the gateway's `getSessionLimits` RPC, and the rate
//! limiter that honours them. Like the ThingsBoard gateway, the connector uses 80 % of each limit.
//! Until (or unless) an answer arrives, the configured payload size applies and nothing is
//! rate-limited, so a broker that never answers does not stall anything.

use std::time::Duration;

use serde_json::Value;

/// `v1/devices/me/rpc/request/1` payload sent after each connect.
pub const REQUEST: &str = r#"{"method":"getSessionLimits","params":{"timeout":5000}}"#;
/// The request id used on every session (ThingsBoard's gateway counts from 1 per connection).
pub const REQUEST_ID: &str = "1";

/// Share of each server limit the connector uses.
const SHARE: f64 = 0.8;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionLimits {
    /// Largest payload to publish (80 % of `maxPayloadSize`).
    pub max_payload: Option<usize>,
    /// Windows for all publishes of the gateway session.
    pub messages: Vec<Window>,
    /// Windows for telemetry publishes.
    pub telemetry_messages: Vec<Window>,
    /// Windows for telemetry datapoints.
    pub telemetry_datapoints: Vec<Window>,
}

/// At most `capacity` units per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub capacity: f64,
    pub period: Duration,
}

impl SessionLimits {
    /// Parses ThingsBoard's answer: `{"maxPayloadSize":65536,"maxInflightMessages":100,
    /// "gatewayRateLimits":{"messages":"20:1,600:60",...},...}`. Missing or null limits mean none.
    pub fn parse(answer: &Value) -> Result<Self, String> {
        let object = answer
            .as_object()
            .ok_or("session limits are not a JSON object")?;
        if let Some(error) = object.get("error") {
            return Err(format!("ThingsBoard answered with an error: {error}"));
        }
        let max_payload = object
            .get("maxPayloadSize")
            .and_then(Value::as_u64)
            .filter(|size| *size > 0)
            .map(|size| (size as f64 * SHARE) as usize);
        let limits = object.get("gatewayRateLimits");
        let windows = |name: &str| -> Result<Vec<Window>, String> {
            match limits.and_then(|l| l.get(name)).and_then(Value::as_str) {
                Some(spec) => parse_windows(spec).map_err(|e| format!("{name}: {e}")),
                None => Ok(Vec::new()),
            }
        };
        Ok(Self {
            max_payload,
            messages: windows("messages")?,
            telemetry_messages: windows("telemetryMessages")?,
            telemetry_datapoints: windows("telemetryDataPoints")?,
        })
    }
}

/// `"20:1,600:60"`: 20 per second and 600 per minute (80 % of each is used).
fn parse_windows(spec: &str) -> Result<Vec<Window>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (capacity, seconds) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not capacity:seconds"))?;
            let capacity: f64 = capacity
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: bad capacity"))?;
            let seconds: f64 = seconds
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: bad period"))?;
            if capacity <= 0.0 || seconds <= 0.0 {
                return Err(format!("{part:?}: capacity and period must be positive"));
            }
            Ok(Window {
                capacity: (capacity * SHARE).max(1.0),
                period: Duration::try_from_secs_f64(seconds)
                    .map_err(|_| format!("{part:?}: bad period"))?,
            })
        })
        .collect()
}

/// Token buckets, one per window; time is passed in so tests drive it.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    buckets: Vec<Bucket>,
}

#[derive(Debug, Clone)]
struct Bucket {
    window: Window,
    tokens: f64,
    updated: Duration,
}

impl RateLimiter {
    pub fn new(windows: &[Window], now: Duration) -> Self {
        Self {
            buckets: windows
                .iter()
                .map(|&window| Bucket {
                    window,
                    tokens: window.capacity,
                    updated: now,
                })
                .collect(),
        }
    }

    /// How long to wait before `units` may go; zero when they may go now. Units beyond a bucket's
    /// capacity wait for a full bucket, so one big batch cannot wait forever.
    pub fn delay(&mut self, units: f64, now: Duration) -> Duration {
        let mut wait = Duration::ZERO;
        for bucket in &mut self.buckets {
            bucket.refill(now);
            let needed = units.min(bucket.window.capacity);
            if bucket.tokens < needed {
                let rate = bucket.window.capacity / bucket.window.period.as_secs_f64();
                wait = wait.max(Duration::from_secs_f64((needed - bucket.tokens) / rate));
            }
        }
        wait
    }

    /// Spends `units` (call when [`Self::delay`] is zero).
    pub fn take(&mut self, units: f64, now: Duration) {
        for bucket in &mut self.buckets {
            bucket.refill(now);
            bucket.tokens -= units.min(bucket.window.capacity);
        }
    }
}

impl Bucket {
    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.updated).as_secs_f64();
        let rate = self.window.capacity / self.window.period.as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.window.capacity);
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_thingsboard_defaults_and_limits() {
        let defaults = json!({"maxPayloadSize": 65536, "maxInflightMessages": 100,
            "rateLimits": {"messages": null}, "gatewayRateLimits": {"messages": null, "telemetryMessages": null, "telemetryDataPoints": null}});
        let limits = SessionLimits::parse(&defaults).unwrap();
        assert_eq!(limits.max_payload, Some(52428));
        assert!(limits.messages.is_empty() && limits.telemetry_datapoints.is_empty());
        let limited =
            json!({"maxPayloadSize": 1000, "gatewayRateLimits": {"messages": "10:1,300:60"}});
        let limits = SessionLimits::parse(&limited).unwrap();
        assert_eq!(limits.max_payload, Some(800));
        assert_eq!(
            limits.messages,
            [
                Window {
                    capacity: 8.0,
                    period: Duration::from_secs(1)
                },
                Window {
                    capacity: 240.0,
                    period: Duration::from_secs(60)
                }
            ]
        );
        assert!(SessionLimits::parse(&json!({"error": "timeout"})).is_err());
        assert!(SessionLimits::parse(&json!({"gatewayRateLimits": {"messages": "x"}})).is_err());
    }

    /// Found while writing the `downlink_messages` fuzz target (which reproduces it): a period too
    /// large for a `Duration`, or NaN, panicked in `Duration::from_secs_f64`.
    #[test]
    fn unrepresentable_periods_are_errors() {
        for spec in ["20:1e999", "20:inf", "20:NaN", "20:1e300"] {
            let answer = json!({"gatewayRateLimits": {"messages": spec}});
            assert!(SessionLimits::parse(&answer).is_err(), "{spec}");
        }
    }

    #[test]
    fn limiter_spreads_units_over_the_window() {
        let window = Window {
            capacity: 10.0,
            period: Duration::from_secs(1),
        };
        let mut limiter = RateLimiter::new(&[window], Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut sent = 0;
        // Over 3 simulated seconds: the burst of 10, then 10 per second.
        while now < Duration::from_secs(3) {
            let wait = limiter.delay(1.0, now);
            if wait.is_zero() {
                limiter.take(1.0, now);
                sent += 1;
            } else {
                now += wait;
            }
        }
        assert!((39..=41).contains(&sent), "{sent}");
        // A batch larger than the bucket waits for a full bucket, not forever.
        let mut empty = RateLimiter::new(&[window], Duration::ZERO);
        empty.take(10.0, Duration::ZERO);
        assert_eq!(empty.delay(50.0, Duration::ZERO), Duration::from_secs(1));
        assert!(RateLimiter::default().delay(1e9, Duration::ZERO).is_zero());
    }
}
