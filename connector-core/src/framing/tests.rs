use super::*;
use crate::framing::config::{parse_bytes, FramingKind};
use proptest::prelude::*;

fn config(kind: FramingKind) -> FramingConfig {
    FramingConfig {
        kind,
        delimiter: None,
        strip_delimiter: None,
        size: None,
        length_field_offset: None,
        length_field_length: None,
        byte_order: None,
        length_adjustment: None,
        initial_bytes_to_strip: None,
        start: None,
        end: None,
        max_frame_length: None,
        on_oversize: None,
    }
}

/// Feeds `chunks` one by one, like successive reads; returns frames and errors in order.
fn framer_of(config: &FramingConfig) -> Framer {
    FramerFactory::new(config)
        .expect("valid framing")
        .expect("not raw")
        .framer()
}

fn run(framer: &mut Framer, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<FrameError>) {
    let mut buffer = BytesMut::new();
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match framer.next_frame(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(error) => errors.push(error),
            }
        }
    }
    (frames, errors)
}

/// Cuts `stream` at the given points.
fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([stream.len()]) {
        chunks.push(&stream[start..point]);
        start = point;
    }
    chunks
}

fn delimiter_framer(delimiter: &str, max: usize) -> Framer {
    let mut c = config(FramingKind::Delimiter);
    c.delimiter = Some(delimiter.to_owned());
    c.max_frame_length = Some(max);
    framer_of(&c)
}

#[test]
fn parses_escapes_and_hex() {
    assert_eq!(parse_bytes("\\n").unwrap(), b"\n");
    assert_eq!(parse_bytes("\\r\\n").unwrap(), b"\r\n");
    assert_eq!(parse_bytes("\\x03|\\0").unwrap(), b"\x03|\0");
    assert_eq!(parse_bytes("0x0D0A").unwrap(), b"\r\n");
    assert_eq!(parse_bytes("END").unwrap(), b"END");
    assert!(parse_bytes("0x0").is_err());
    assert!(parse_bytes("\\q").is_err());
    assert!(parse_bytes("\\xZZ").is_err());
}

/// Found by the `config_loader` fuzz target: non-ASCII text after `0x` panicked (a byte index
/// inside a character) instead of being rejected.
#[test]
fn non_ascii_hex_is_an_error() {
    assert!(parse_bytes("0x1\u{e9}1").is_err());
    assert!(parse_bytes("0x\u{e9}").is_err());
    // from_str_radix alone would read "+1" as 1.
    assert!(parse_bytes("0x+1").is_err());
    assert_eq!(parse_bytes("0x0D 0a"), Ok(vec![0x0d, 0x0a]));
}

#[test]
fn config_errors_name_the_key() {
    assert_eq!(
        FramerFactory::new(&config(FramingKind::Delimiter)).unwrap_err(),
        (
            "delimiter",
            "missing: required by type delimiter".to_owned()
        )
    );
    assert_eq!(
        FramerFactory::new(&config(FramingKind::Fixed))
            .unwrap_err()
            .0,
        "size"
    );
    let mut length = config(FramingKind::Length);
    length.length_field_length = Some(3);
    assert_eq!(
        FramerFactory::new(&length).unwrap_err().0,
        "lengthFieldLength"
    );
    let mut markers = config(FramingKind::Markers);
    markers.start = Some("0x88".into());
    assert_eq!(
        FramerFactory::new(&markers).unwrap_err(),
        ("end", "missing: required by type markers".to_owned())
    );
    assert!(FramerFactory::new(&config(FramingKind::Raw))
        .unwrap()
        .is_none());
}

#[test]
fn delimiter_split_and_merged_reads() {
    let mut framer = delimiter_framer("\\r\\n", 100);
    let (frames, errors) = run(&mut framer, &[b"ab", b"c\r", b"\nde\r\nf", b"g\r\n"]);
    assert_eq!(frames, [b"abc".to_vec(), b"de".to_vec(), b"fg".to_vec()]);
    assert!(errors.is_empty());
    let mut keep = config(FramingKind::Delimiter);
    keep.delimiter = Some("\\n".into());
    keep.strip_delimiter = Some(false);
    let (frames, _) = run(&mut framer_of(&keep), &[b"a\nb\n"]);
    assert_eq!(frames, [b"a\n".to_vec(), b"b\n".to_vec()]);
}

#[test]
fn oversized_delimited_frame_is_dropped_once_and_the_stream_resynchronises() {
    let mut framer = delimiter_framer("\\n", 5);
    let (frames, errors) = run(&mut framer, &[b"abc\n0123", b"456789", b"012\nxy\n"]);
    assert_eq!(frames, [b"abc".to_vec(), b"xy".to_vec()]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(errors[0], FrameError::TooLong { .. }));
}

#[test]
fn length_field_vectors() {
    // Netty's example: 2-byte big-endian length, header stripped.
    let mut c = config(FramingKind::Length);
    c.initial_bytes_to_strip = Some(2);
    let (frames, _) = run(&mut framer_of(&c), &[b"\x00\x0cHELLO, WORLD\x00\x02hi"]);
    assert_eq!(frames, [b"HELLO, WORLD".to_vec(), b"hi".to_vec()]);
    // Length counts the header too (adjustment -2), little-endian 2 bytes, header kept.
    let mut c = config(FramingKind::Length);
    c.byte_order = Some(ByteOrder::Little);
    c.length_adjustment = Some(-2);
    let (frames, _) = run(&mut framer_of(&c), &[b"\x05\x00abc"]);
    assert_eq!(frames, [b"\x05\x00abc".to_vec()]);
    // A 1-byte field after a 2-byte type marker.
    let mut c = config(FramingKind::Length);
    c.length_field_offset = Some(2);
    c.length_field_length = Some(1);
    let (frames, _) = run(&mut framer_of(&c), &[b"\xAA\xBB\x02xy"]);
    assert_eq!(frames, [b"\xAA\xBB\x02xy".to_vec()]);
}

#[test]
fn length_field_oversize_skips_exactly_that_frame() {
    let mut c = config(FramingKind::Length);
    c.length_field_length = Some(1);
    c.max_frame_length = Some(4);
    let (frames, errors) = run(&mut framer_of(&c), &[b"\x01a\x09012", b"345678\x02bc"]);
    assert_eq!(frames, [b"\x01a".to_vec(), b"\x02bc".to_vec()]);
    assert_eq!(errors.len(), 1);
    let mut bad = config(FramingKind::Length);
    bad.length_adjustment = Some(-10);
    let (_, errors) = run(&mut framer_of(&bad), &[b"\x00\x01x"]);
    assert!(matches!(errors[0], FrameError::BadLength { .. }));
}

/// Found by the `framing` fuzz target: a `lengthFieldOffset` near `usize::MAX` overflowed the
/// header size (a panic with overflow checks, a bad slice without).
#[test]
fn huge_length_field_offset_waits_instead_of_panicking() {
    let mut c = config(FramingKind::Length);
    c.length_field_offset = Some(usize::MAX);
    let mut framer = framer_of(&c);
    let (frames, errors) = run(&mut framer, &[b"\x00\x05hello\x00\x03abc"]);
    assert!(frames.is_empty() && errors.is_empty());
}

/// Reported by the fuzzing work: a `\r\n` split across the read that made a frame oversized was
/// thrown away with it, so the oversized frame's end was missed and the next frame dropped too.
#[test]
fn a_split_delimiter_after_an_oversized_frame_keeps_the_next_frame() {
    let mut c = config(FramingKind::Delimiter);
    c.delimiter = Some("\\r\\n".into());
    c.max_frame_length = Some(4);
    let mut framer = framer_of(&c);
    let (frames, errors) = run(&mut framer, &[b"aaaaaaa\r", b"\nok\r\n"]);
    assert_eq!(frames, [b"ok".to_vec()]);
    assert_eq!(errors.len(), 1);
}

/// A frame of exactly maxFrameLength whose multi-byte delimiter is split across reads is a frame,
/// not an oversized one (found by the framing fuzz target after the fix above: an error must
/// consume input).
#[test]
fn a_full_size_frame_with_a_split_delimiter_is_not_oversized() {
    let mut c = config(FramingKind::Delimiter);
    c.delimiter = Some("\\r\\n".into());
    c.max_frame_length = Some(4);
    let mut framer = framer_of(&c);
    let (frames, errors) = run(&mut framer, &[b"abcd\r", b"\n"]);
    assert_eq!(frames, [b"abcd".to_vec()]);
    assert!(errors.is_empty());
}

/// Reported by the fuzzing work: the decoder reserved the whole announced frame at once, so with a
/// large `maxFrameLength` a peer could make each connection allocate it with a 4-byte header.
#[test]
fn an_announced_length_is_not_allocated_before_its_bytes_arrive() {
    let mut c = config(FramingKind::Length);
    c.length_field_length = Some(4);
    c.max_frame_length = Some(64 << 20);
    let mut framer = framer_of(&c);
    let mut buffer = bytes::BytesMut::from(&[0x01u8, 0x00, 0x00, 0x00][..]);
    assert_eq!(
        framer.next_frame(&mut buffer),
        Ok(None),
        "16 MiB announced, 0 arrived"
    );
    assert!(
        buffer.capacity() < 1 << 20,
        "reserved {} bytes",
        buffer.capacity()
    );
}

#[test]
fn markers_skip_garbage_between_frames() {
    let mut c = config(FramingKind::Markers);
    c.start = Some("0x88".into());
    c.end = Some("0xFF".into());
    let (frames, errors) = run(
        &mut framer_of(&c),
        &[b"junk\x88\x01\x02", b"\xFFmore\x88\x03\xFF"],
    );
    assert_eq!(
        frames,
        [b"\x88\x01\x02\xFF".to_vec(), b"\x88\x03\xFF".to_vec()]
    );
    assert!(errors.is_empty());
    c.max_frame_length = Some(4);
    let (frames, errors) = run(
        &mut framer_of(&c),
        &[b"\x88\x01\x02\x03\x04\x05\xFF\x88\x09\xFF"],
    );
    assert_eq!(frames, [b"\x88\x09\xFF".to_vec()]);
    assert_eq!(errors.len(), 1);
}

#[test]
fn fixed_size() {
    let mut c = config(FramingKind::Fixed);
    c.size = Some(3);
    let (frames, _) = run(&mut framer_of(&c), &[b"ab", b"cdefg", b"h"]);
    assert_eq!(frames, [b"abc".to_vec(), b"def".to_vec()]);
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Frames split and merged at arbitrary points decode to the same frames, for every framer.
    #[test]
    fn any_split_of_the_stream_yields_the_frames(
        frames in proptest::collection::vec(payload(), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        which in 0usize..4,
    ) {
        let (mut framer, stream, expected): (Framer, Vec<u8>, Vec<Vec<u8>>) = match which {
            0 => {
                let frames: Vec<Vec<u8>> = frames.iter().map(|f| f.iter().copied().filter(|b| *b != b'\n').collect()).collect();
                let stream = frames.iter().flat_map(|f| f.iter().copied().chain([b'\n'])).collect();
                (delimiter_framer("\\n", 1000), stream, frames)
            }
            1 => {
                let mut c = config(FramingKind::Length);
                c.initial_bytes_to_strip = Some(2);
                let stream = frames.iter().flat_map(|f| (f.len() as u16).to_be_bytes().into_iter().chain(f.iter().copied())).collect();
                (framer_of(&c), stream, frames.clone())
            }
            2 => {
                let mut c = config(FramingKind::Fixed);
                c.size = Some(4);
                let stream: Vec<u8> = frames.concat();
                let whole = stream.len() / 4 * 4;
                let expected = stream[..whole].chunks(4).map(<[u8]>::to_vec).collect();
                (framer_of(&c), stream, expected)
            }
            _ => {
                let mut c = config(FramingKind::Markers);
                c.start = Some("0x88".into());
                c.end = Some("0xFF".into());
                let bodies: Vec<Vec<u8>> = frames.iter().map(|f| f.iter().copied().filter(|b| *b != 0x88 && *b != 0xFF).collect()).collect();
                let expected = bodies.iter().map(|b| [&[0x88], b.as_slice(), &[0xFF]].concat()).collect();
                let stream = bodies.iter().flat_map(|b| [0x88].into_iter().chain(b.iter().copied()).chain([0xFF])).collect();
                (framer_of(&c), stream, expected)
            }
        };
        let chunks = split(&stream, &cuts);
        let (decoded, errors) = run(&mut framer, &chunks);
        prop_assert!(errors.is_empty());
        prop_assert_eq!(decoded, expected);
    }

    /// Arbitrary bytes in arbitrary reads never panic any framer, and frames respect the maximum.
    #[test]
    fn arbitrary_input_never_panics(
        stream in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
        which in 0usize..4,
        little in any::<bool>(),
    ) {
        let max = 32;
        let mut c = config([FramingKind::Delimiter, FramingKind::Length, FramingKind::Fixed, FramingKind::Markers][which]);
        c.max_frame_length = Some(max);
        c.delimiter = Some("\\n".into());
        c.size = Some(3);
        c.start = Some("0x88".into());
        c.end = Some("0xFF".into());
        c.length_field_length = Some(if little { 4 } else { 1 });
        c.byte_order = Some(if little { ByteOrder::Little } else { ByteOrder::Big });
        c.length_adjustment = Some(if little { -3 } else { 0 });
        let mut framer = framer_of(&c);
        let (frames, _) = run(&mut framer, &split(&stream, &cuts));
        for frame in frames {
            prop_assert!(frame.len() <= max);
        }
    }
}
