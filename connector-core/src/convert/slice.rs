//! ThingsBoard's `byteFrom`/`byteTo`: a Python slice `data[from:to]`, except that `byteTo: -1`
//! means "to the end, including the last byte".

/// The bytes `data[from:to]` with Python's rules: negative indices count from the end, indices
/// out of range clamp, `from >= to` is empty, an absent bound is open, and `to == -1` is the end.
pub fn byte_slice(data: &[u8], from: Option<i64>, to: Option<i64>) -> &[u8] {
    match to {
        Some(-1) => python_slice(data, from, None),
        _ => python_slice(data, from, to),
    }
}

/// Plain Python `data[from:to]`.
pub fn python_slice(data: &[u8], from: Option<i64>, to: Option<i64>) -> &[u8] {
    let len = data.len();
    let start = from.map_or(0, |index| clamp_index(index, len));
    let end = to.map_or(len, |index| clamp_index(index, len));
    if start >= end {
        &[]
    } else {
        &data[start..end]
    }
}

/// Python's slice-index normalization.
fn clamp_index(index: i64, len: usize) -> usize {
    if index < 0 {
        let from_end = index.unsigned_abs();
        usize::try_from(from_end).map_or(0, |back| len.saturating_sub(back))
    } else {
        usize::try_from(index).map_or(len, |i| i.min(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thingsboard_examples() {
        let data = b"2345";
        assert_eq!(byte_slice(data, Some(0), Some(-1)), b"2345");
        assert_eq!(byte_slice(data, Some(0), Some(2)), b"23");
        assert_eq!(byte_slice(data, Some(2), Some(4)), b"45");
        assert_eq!(byte_slice(data, Some(0), Some(-2)), b"23");
        assert_eq!(byte_slice(data, Some(-3), None), b"345");
        assert_eq!(byte_slice(data, None, None), b"2345");
        assert_eq!(byte_slice(data, Some(0), Some(0)), b"");
        assert_eq!(byte_slice(data, Some(3), Some(1)), b"");
        assert_eq!(byte_slice(data, Some(2), Some(100)), b"45");
        assert_eq!(byte_slice(data, Some(-100), Some(1)), b"2");
        assert_eq!(byte_slice(b"", Some(0), Some(-1)), b"");
        assert_eq!(byte_slice(data, Some(i64::MIN), Some(i64::MAX)), b"2345");
    }

    /// Python's slice semantics written the slow, obvious way: walk every index.
    fn model(data: &[u8], from: Option<i64>, to: Option<i64>) -> Vec<u8> {
        let len = data.len() as i128;
        let norm = |i: i64| {
            let i = i as i128;
            let i = if i < 0 { i + len } else { i };
            i.clamp(0, len)
        };
        let start = from.map_or(0, norm);
        let end = match to {
            Some(-1) | None => len,
            Some(i) => norm(i),
        };
        (0..len)
            .filter(|i| *i >= start && *i < end)
            .map(|i| data[i as usize])
            .collect()
    }

    proptest! {
        #[test]
        fn matches_the_model(
            data in proptest::collection::vec(any::<u8>(), 0..40),
            from in proptest::option::of(-50i64..50),
            to in proptest::option::of(-50i64..50),
        ) {
            let expected = model(&data, from, to);
            prop_assert_eq!(byte_slice(&data, from, to), expected.as_slice());
        }

        #[test]
        fn never_panics_on_extreme_indices(
            data in proptest::collection::vec(any::<u8>(), 0..8),
            from in proptest::option::of(any::<i64>()),
            to in proptest::option::of(any::<i64>()),
        ) {
            let expected = model(&data, from, to);
            prop_assert_eq!(byte_slice(&data, from, to), expected.as_slice());
        }
    }
}
