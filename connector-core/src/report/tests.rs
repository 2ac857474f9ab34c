use super::*;
use crate::config::{
    ReportStrategyConfig, StrategyCascade, DEFAULT_GLOBAL_PERIOD_MS, DEFAULT_TTL_MS,
};
use proptest::prelude::*;

fn strategy(kind: ReportStrategyKind, period_ms: u64) -> ReportStrategy {
    ReportStrategy {
        kind,
        period_ms,
        ttl_ms: DEFAULT_TTL_MS,
    }
}

fn device(name: &str) -> Arc<DeviceIdentity> {
    Arc::new(DeviceIdentity {
        name: name.into(),
        device_type: "default".into(),
    })
}

fn message(
    dev: &Arc<DeviceIdentity>,
    ts: i64,
    points: &[(&str, &str, ReportStrategy)],
) -> ConvertedData {
    ConvertedData {
        device: dev.clone(),
        ts_ms: ts,
        telemetry: points
            .iter()
            .map(|(k, v, s)| Datapoint {
                key: (*k).into(),
                value: Value::from(*v),
                strategy: Some(*s),
            })
            .collect(),
        attributes: Vec::new(),
        decode_errors: 0,
    }
}

/// Runs one telemetry value through the filter and says whether it was forwarded.
fn send(
    filter: &mut ReportFilter,
    dev: &Arc<DeviceIdentity>,
    key: &str,
    value: &str,
    s: ReportStrategy,
    now: i64,
) -> bool {
    let mut data = message(dev, now, &[(key, value, s)]);
    filter.filter(&mut data, now);
    !data.telemetry.is_empty()
}

#[test]
fn on_received_forwards_everything() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    for now in 0..3 {
        assert!(send(
            &mut filter,
            &dev,
            "t",
            "1",
            ReportStrategy::ON_RECEIVED,
            now
        ));
    }
    assert!(filter.is_empty(), "ON_RECEIVED needs no memory");
}

#[test]
fn on_change_forwards_first_and_changed_values() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let s = strategy(ReportStrategyKind::OnChange, 0);
    assert!(send(&mut filter, &dev, "t", "1", s, 0));
    assert!(!send(&mut filter, &dev, "t", "1", s, 1));
    assert!(send(&mut filter, &dev, "t", "2", s, 2));
    assert!(!send(&mut filter, &dev, "t", "2", s, 3));
    assert!(send(&mut filter, &dev, "t", "1", s, 4));
    // Another device with the same key has its own memory.
    assert!(send(&mut filter, &device("e"), "t", "1", s, 5));
    assert_eq!(filter.due(1_000_000), Vec::new());
}

#[test]
fn on_report_period_resends_latest_value_with_send_time() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let s = strategy(ReportStrategyKind::OnReportPeriod, 1000);
    assert!(send(&mut filter, &dev, "t", "1", s, 10_000));
    assert!(!send(&mut filter, &dev, "t", "2", s, 10_100));
    assert!(!send(&mut filter, &dev, "t", "3", s, 10_200));
    // Due 50 ms early, as in ThingsBoard: last report + period - 50.
    assert_eq!(filter.next_due_ms(), Some(10_950));
    assert!(filter.due(10_949).is_empty());
    let resent = filter.due(10_950);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].ts_ms, 10_950);
    assert_eq!(resent[0].telemetry[0].value, Value::from("3"));
    // Nothing new: the latest value is re-sent anyway, one period later.
    assert!(filter.due(11_000).is_empty());
    assert_eq!(filter.next_due_ms(), Some(11_900));
    let again = filter.due(11_900);
    assert_eq!(again[0].telemetry[0].value, Value::from("3"));
}

#[test]
fn on_change_or_report_period_sends_changes_without_resetting_the_period() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let s = strategy(ReportStrategyKind::OnChangeOrReportPeriod, 1000);
    assert!(send(&mut filter, &dev, "t", "1", s, 0));
    assert!(!send(&mut filter, &dev, "t", "1", s, 100));
    assert!(send(&mut filter, &dev, "t", "2", s, 900));
    assert_eq!(filter.next_due_ms(), Some(950));
    let resent = filter.due(950);
    assert_eq!(resent[0].telemetry[0].value, Value::from("2"));
}

#[test]
fn disabled_below_global_forwards_only_the_first_value() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let s = strategy(ReportStrategyKind::Disabled, 0);
    assert!(send(&mut filter, &dev, "t", "1", s, 0));
    assert!(!send(&mut filter, &dev, "t", "2", s, 1));
    assert!(!send(&mut filter, &dev, "t", "3", s, 2));
}

#[test]
fn expired_values_count_as_never_seen() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let s = ReportStrategy {
        kind: ReportStrategyKind::OnChange,
        period_ms: 0,
        ttl_ms: 1000,
    };
    assert!(send(&mut filter, &dev, "t", "1", s, 0));
    assert!(!send(&mut filter, &dev, "t", "1", s, 1000));
    // Seen at 1000, so alive until 2000.
    assert!(!send(&mut filter, &dev, "t", "1", s, 2000));
    assert!(send(&mut filter, &dev, "t", "1", s, 3001));
    filter.sweep(10_000);
    assert!(filter.is_empty());
}

#[test]
fn a_changed_strategy_starts_afresh() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let on_change = strategy(ReportStrategyKind::OnChange, 0);
    let disabled = strategy(ReportStrategyKind::Disabled, 0);
    assert!(send(&mut filter, &dev, "t", "1", on_change, 0));
    assert!(send(&mut filter, &dev, "t", "1", disabled, 1));
    assert!(!send(&mut filter, &dev, "t", "2", disabled, 2));
}

#[test]
fn telemetry_and_attributes_with_one_name_are_separate() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let dev = device("d");
    let s = strategy(ReportStrategyKind::OnChange, 0);
    let mut data = message(&dev, 0, &[("x", "1", s)]);
    data.attributes = data.telemetry.clone();
    let decision = filter.filter(&mut data, 0);
    assert_eq!(
        decision,
        Decision {
            forwarded: 2,
            suppressed: 0
        }
    );
    assert_eq!((data.telemetry.len(), data.attributes.len()), (1, 1));
}

#[test]
fn periodic_resends_group_keys_per_device() {
    let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
    let (a, b) = (device("a"), device("b"));
    let s = strategy(ReportStrategyKind::OnReportPeriod, 100);
    let mut first = message(&a, 0, &[("x", "1", s), ("y", "2", s)]);
    first.attributes = vec![Datapoint {
        key: "attr".into(),
        value: "v".into(),
        strategy: Some(s),
    }];
    filter.filter(&mut first, 0);
    send(&mut filter, &b, "x", "9", s, 0);
    let resent = filter.due(50);
    assert_eq!(resent.len(), 2);
    let for_a = resent.iter().find(|m| &*m.device.name == "a").unwrap();
    let keys: Vec<&str> = for_a.telemetry.iter().map(|p| &*p.key).collect();
    assert_eq!(keys, ["x", "y"], "keys keep their first-seen order");
    assert_eq!(for_a.attributes.len(), 1);
}

#[test]
fn float_values_use_thingsboard_tolerance() {
    assert!(!values_differ(&Value::from(1.0), &Value::from(1.0005)));
    assert!(values_differ(&Value::from(1.0), &Value::from(1.002)));
    assert!(values_differ(&Value::from(1), &Value::from(2)));
    assert!(values_differ(&Value::from("1"), &Value::from("1.0")));
}

fn level(kind: &str, period: Option<u64>) -> ReportStrategyConfig {
    ReportStrategyConfig {
        kind: ReportStrategyKind::parse(kind),
        report_period: period,
        ttl: None,
        aggregation_function: None,
    }
}

#[test]
fn cascade_most_specific_level_wins() {
    let global = ReportStrategy::global(Some(&level("ON_CHANGE", None)));
    let connector = level("ON_REPORT_PERIOD", Some(5000));
    let device = level("ON_CHANGE_OR_REPORT_PERIOD", Some(3000));
    let key = level("DISABLED", None);
    let cascade = StrategyCascade::new(Some(&connector));
    let effective = |level| ReportStrategy::effective(level, global);
    assert_eq!(
        effective(cascade.resolve(Some(&device), Some(&key))).kind,
        ReportStrategyKind::Disabled
    );
    assert_eq!(
        effective(cascade.resolve(Some(&device), None)).period_ms,
        3000
    );
    assert_eq!(effective(cascade.resolve(None, None)).period_ms, 5000);
    let bare = StrategyCascade::new(None);
    assert_eq!(
        effective(bare.resolve(None, None)).kind,
        ReportStrategyKind::OnChange
    );
    // An object without type is "not specified" and falls through.
    let unspecified = ReportStrategyConfig {
        kind: None,
        report_period: None,
        ttl: Some(5),
        aggregation_function: None,
    };
    assert_eq!(
        effective(bare.resolve(Some(&unspecified), Some(&unspecified))).kind,
        ReportStrategyKind::OnChange
    );
}

#[test]
fn global_defaults_and_ten_millisecond_adjustment() {
    let default = ReportStrategy::global(None);
    assert_eq!(default.kind, ReportStrategyKind::OnReceived);
    assert_eq!(default.period_ms, DEFAULT_GLOBAL_PERIOD_MS - 10);
    let short = ReportStrategy::global(Some(&level("ON_REPORT_PERIOD", Some(5))));
    assert_eq!(short.period_ms, 1);
    let ttl = ReportStrategy::global(Some(&ReportStrategyConfig {
        ttl: Some(60),
        ..level("ON_CHANGE", None)
    }));
    assert_eq!(ttl.ttl_ms, 60_000);
}

#[test]
fn disabled_global_strategy_forwards_everything() {
    let global = ReportStrategy::global(Some(&level("DISABLED", None)));
    let cascade = StrategyCascade::new(Some(&level("ON_CHANGE", None)));
    assert_eq!(
        ReportStrategy::effective(
            cascade.resolve(Some(&level("ON_CHANGE", None)), None),
            global
        ),
        ReportStrategy::ON_RECEIVED
    );
    let mut filter = ReportFilter::new(global);
    let on_change = strategy(ReportStrategyKind::OnChange, 0);
    let dev = device("d");
    assert!(send(&mut filter, &dev, "k", "1", on_change, 0));
    assert!(
        send(&mut filter, &dev, "k", "1", on_change, 1),
        "a DISABLED gateway strategy forwards even unchanged values"
    );
}

proptest! {
    /// ON_CHANGE forwards exactly the values that differ from the previous one.
    #[test]
    fn on_change_matches_model(values in proptest::collection::vec(0u8..3, 1..50)) {
        let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
        let dev = device("d");
        let s = strategy(ReportStrategyKind::OnChange, 0);
        let mut previous: Option<u8> = None;
        for (now, v) in values.iter().enumerate() {
            let forwarded = send(&mut filter, &dev, "k", &v.to_string(), s, now as i64);
            prop_assert_eq!(forwarded, previous != Some(*v));
            previous = Some(*v);
        }
    }

    /// Whatever the arrivals, a periodic key is re-sent exactly every period (minus ThingsBoard's
    /// 50 ms tolerance), and arrivals themselves are never forwarded.
    #[test]
    fn periodic_resends_keep_their_rhythm(
        arrivals in proptest::collection::vec(1i64..3000, 0..20),
        period in 100u64..1000,
    ) {
        let mut filter = ReportFilter::new(ReportStrategy::ON_RECEIVED);
        let dev = device("d");
        let s = strategy(ReportStrategyKind::OnReportPeriod, period);
        send(&mut filter, &dev, "k", "0", s, 0);
        let mut arrivals = arrivals;
        arrivals.sort();
        let mut sends = vec![0i64];
        let mut next_arrival = arrivals.into_iter().peekable();
        for now in 1..3000i64 {
            while next_arrival.peek().is_some_and(|t| *t <= now) {
                next_arrival.next();
                prop_assert!(!send(&mut filter, &dev, "k", "1", s, now));
            }
            if !filter.due(now).is_empty() {
                sends.push(now);
            }
        }
        prop_assert!(sends.len() >= 3);
        for pair in sends.windows(2) {
            prop_assert_eq!(pair[1] - pair[0], period as i64 - PERIOD_TOLERANCE_MS);
        }
    }
}
