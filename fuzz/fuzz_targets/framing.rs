//! Every framer, configured by the fuzzer (through `FramingConfig`, as `socket.json` does), fed an
//! arbitrary stream cut into arbitrary reads. Nothing may panic; every decode step that yields a
//! frame or an error consumes input (no livelock); frames respect `maxFrameLength`; and for
//! delimiter, fixed and markers the frames do not depend on where the stream was cut.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use connector_core::framing::{parse_bytes, FrameError, Framer, FramerFactory, FramingConfig, FramingKind};

/// Byte strings as `socket.json` spells them: mostly valid escapes or hex, sometimes raw text.
fn bytes_text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => {
            let bytes: Vec<u8> = (0..u.int_in_range(1..=3usize)?)
                .map(|_| u.arbitrary::<u8>())
                .collect::<Result<_>>()?;
            let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            format!("0x{hex}")
        }
        1 => u
            .choose(&["\\n", "\\r\\n", "\\0", "\\x03", "\\x02", "|", "\\t", "END"])?
            .to_string(),
        _ => u.arbitrary::<String>()?,
    })
}

/// Small numbers mostly (interesting behaviour), up to `big` sometimes (overflow checks).
fn size(u: &mut Unstructured<'_>, small: u64, big: u64) -> Result<u64> {
    if u.ratio(1u8, 8u8)? {
        u.int_in_range(0..=big)
    } else {
        u.int_in_range(0..=small)
    }
}

fn config(u: &mut Unstructured<'_>) -> Result<Value> {
    let kind = *u.choose(&["delimiter", "fixed", "length", "markers", "raw"])?;
    let mut c = Map::new();
    c.insert("type".into(), json!(kind));
    if u.arbitrary()? {
        // At most 16 MiB: the length framer reserves room for a whole announced frame, so a
        // larger maximum only measures the allocator (libFuzzer's malloc limit is 2 GB).
        c.insert("maxFrameLength".into(), json!(size(u, 64, 1 << 24)?));
    }
    match kind {
        "delimiter" => {
            c.insert("delimiter".into(), json!(bytes_text(u)?));
            if u.arbitrary()? {
                c.insert("stripDelimiter".into(), json!(u.arbitrary::<bool>()?));
            }
        }
        "fixed" => {
            c.insert("size".into(), json!(size(u, 16, u64::MAX)?));
        }
        "length" => {
            c.insert("lengthFieldOffset".into(), json!(size(u, 4, u64::MAX)?));
            c.insert(
                "lengthFieldLength".into(),
                json!(*u.choose(&[1, 2, 4, 8, 3])?),
            );
            c.insert("byteOrder".into(), json!(*u.choose(&["big", "little"])?));
            let adjustment: i64 = if u.ratio(1u8, 8u8)? {
                u.arbitrary()?
            } else {
                u.int_in_range(-8..=8)?
            };
            c.insert("lengthAdjustment".into(), json!(adjustment));
            c.insert("initialBytesToStrip".into(), json!(size(u, 8, u64::MAX)?));
        }
        "markers" => {
            c.insert("start".into(), json!(bytes_text(u)?));
            c.insert("end".into(), json!(bytes_text(u)?));
        }
        _ => {}
    }
    Ok(Value::Object(c))
}

/// Feeds the chunks as successive reads; returns the frames and the number of errors.
fn run(framer: &mut Framer, chunks: &[&[u8]], max: usize, slack: usize) -> (Vec<Vec<u8>>, usize) {
    let mut buffer = BytesMut::new();
    let (mut frames, mut errors) = (Vec::new(), 0);
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.len();
            let outcome = framer.next_frame(&mut buffer);
            match outcome {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= max + slack,
                        "frame of {} bytes, maxFrameLength {max}",
                        frame.len()
                    );
                    frames.push(frame.to_vec());
                }
                Err(FrameError::Io(e)) => panic!("framers do no IO: {e}"),
                Err(_) => errors += 1,
            }
            assert!(
                buffer.len() < before,
                "a frame or an error without consuming input"
            );
        }
    }
    (frames, errors)
}

fn target(u: &mut Unstructured<'_>) -> Result<()> {
    let value = config(u)?;
    let Ok(config) = serde_json::from_value::<FramingConfig>(value) else {
        return Ok(());
    };
    let Ok(Some(factory)) = FramerFactory::new(&config) else {
        return Ok(());
    };
    let (mut framer, mut whole) = (factory.framer(), factory.framer());
    let max = config.max_frame_length.unwrap_or(65_536);
    let (slack, strict) = match config.kind {
        // An unstripped delimiter is not counted in maxFrameLength.
        FramingKind::Delimiter if config.strip_delimiter == Some(false) => {
            let delimiter = config.delimiter.as_deref().unwrap_or_default();
            (parse_bytes(delimiter).map_or(0, |b| b.len()), false)
        }
        FramingKind::Fixed | FramingKind::Markers => (0, true),
        _ => (0, false),
    };
    let cuts: Vec<u16> = u.arbitrary()?;
    let stream = u.bytes(u.len())?;
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([stream.len()]) {
        chunks.push(&stream[start..point]);
        start = point;
    }
    let (frames, errors) = run(&mut framer, &chunks, max, slack);
    let (whole_frames, whole_errors) = run(&mut whole, &[stream], max, slack);
    // Without oversized or corrupt frames, where the reads end changes nothing. After one, the
    // delimiter framer drops what it buffered (a delimiter split by that read is lost) and the
    // length framer drops the buffer on a bad length, so only fixed and markers stay exact.
    if strict || (errors == 0 && whole_errors == 0) {
        assert_eq!(frames, whole_frames, "frames depend on the read boundaries");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = target(&mut Unstructured::new(data));
});
