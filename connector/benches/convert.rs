//! Micro-benchmarks of the data path, per frame of the load generator's layout
//! (`socket_connector::simulate`): 23-byte newline-terminated frames with three telemetry keys.
//!
//! ```sh
//! cargo bench -p socket-connector --bench convert
//! ```
//!
//! - `convert/23_byte_frame_3_keys`: `UplinkConverter::convert` of one frame.
//! - `framing/delimiter_1024_byte_read`: the `\n` framer cutting one 1024-byte read (44 frames).
//! - `gateway/telemetry_payloads_1000`: `UplinkBatch::telemetry_payloads` of 1000 messages.
//! - `gateway/batch_add_1000`: `UplinkBatch::add` of 1000 converted messages.
//! - `pipeline/1000_frames`: all of the above for 1000 frames, as the connector does them.
//!
//! Objects are built from the `socket.json` the load generator prints, through the same
//! configuration code the connector runs, so the benchmarks follow the public API.

use std::hint::black_box;

use bytes::BytesMut;
use connector_core::build::Built;
use connector_core::convert::{ConvertedData, UplinkConverter};
use connector_core::framing::{Framer, FramerFactory, FramingConfig};
use connector_core::load::load_str;
use connector_core::thingsboard::api::UplinkBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use socket_connector::simulate::{self, Protocol, FRAME_LEN};

/// The connector's default `--max-payload-size`.
const MAX_PAYLOAD: usize = 8196;
/// A timestamp in ThingsBoard's unit (ms since the epoch).
const TS_MS: i64 = 1_795_613_632_556;

fn bench_config() -> std::sync::Arc<Built> {
    let text = simulate::socket_json(Protocol::Tcp, 0, 1024).to_string();
    load_str(&text)
        .expect("the generator's socket.json loads")
        .built
}

fn converter() -> UplinkConverter {
    bench_config().devices.devices()[0].converter.clone()
}

fn framer() -> Framer {
    let framing: FramingConfig = serde_json::from_value(serde_json::json!({
        "type": "delimiter", "delimiter": "\\n"
    }))
    .expect("framing config");
    FramerFactory::new(&framing)
        .expect("valid framing")
        .expect("not raw framing")
        .framer()
}

/// `count` frames back to back, as they arrive on the socket.
fn frames(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count * FRAME_LEN];
    for (seq, frame) in bytes.chunks_exact_mut(FRAME_LEN).enumerate() {
        simulate::encode_frame(frame, seq as u64, 1_795_613_632_556_789 + seq as u64, 0);
    }
    bytes
}

fn converted(converter: &UplinkConverter, count: usize) -> Vec<ConvertedData> {
    frames(count)
        .chunks_exact(FRAME_LEN)
        .map(|frame| converter.convert(&frame[..FRAME_LEN - 1], TS_MS))
        .collect()
}

fn convert(c: &mut Criterion) {
    let converter = converter();
    let frame = frames(1);
    let payload = &frame[..FRAME_LEN - 1];
    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Elements(1));
    group.bench_function("23_byte_frame_3_keys", |b| {
        b.iter(|| converter.convert(black_box(payload), black_box(TS_MS)))
    });
    group.finish();
}

fn framing(c: &mut Criterion) {
    // One read of bufferSize 1024 holds 44 whole frames and the start of the next.
    let stream = frames(45);
    let read = &stream[..1024];
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(44));
    group.bench_function("delimiter_1024_byte_read", |b| {
        let mut framer = framer();
        let mut buffer = BytesMut::with_capacity(2048);
        b.iter(|| {
            buffer.clear();
            buffer.extend_from_slice(black_box(read));
            let mut count = 0;
            while let Ok(Some(frame)) = framer.next_frame(&mut buffer) {
                black_box(&frame);
                count += 1;
            }
            count
        })
    });
    group.finish();
}

fn gateway(c: &mut Criterion) {
    let converter = converter();
    let messages = converted(&converter, 1000);
    let mut batch = UplinkBatch::new();
    for message in messages.iter().cloned() {
        batch.add(message);
    }
    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("telemetry_payloads_1000", |b| {
        b.iter(|| batch.telemetry_payloads(black_box(MAX_PAYLOAD)))
    });
    group.bench_function("batch_add_1000", |b| {
        b.iter_batched(
            || messages.clone(),
            |messages| {
                let mut batch = UplinkBatch::new();
                for message in messages {
                    batch.add(message);
                }
                batch
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let converter = converter();
    let stream = frames(1000);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_frames", |b| {
        let mut framer = framer();
        let mut buffer = BytesMut::with_capacity(stream.len());
        b.iter(|| {
            let mut batch = UplinkBatch::new();
            for read in black_box(&stream).chunks(1024) {
                buffer.extend_from_slice(read);
                while let Ok(Some(frame)) = framer.next_frame(&mut buffer) {
                    batch.add(converter.convert(&frame, TS_MS));
                }
            }
            batch.telemetry_payloads(MAX_PAYLOAD)
        })
    });
    group.finish();
}

criterion_group!(benches, convert, framing, gateway, pipeline);
criterion_main!(benches);
