use super::*;

fn outbound(topic: Topic, payload: &str) -> Outbound {
    Outbound::new(topic, 1, payload.as_bytes().to_vec())
}

fn telemetry(payloads: &[&str]) -> Vec<Outbound> {
    payloads
        .iter()
        .map(|p| outbound(Topic::Telemetry, p))
        .collect()
}

/// A memory queue's capacity for `bytes` of payload in `records` records.
fn capacity(bytes: u64, records: u64) -> u64 {
    bytes + records * MEMORY_RECORD_OVERHEAD
}

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn records_leave_only_when_acknowledged_and_come_back_after_a_lost_session() {
    let queue = Queue::in_memory(1 << 20, FullPolicy::Block);
    queue.push(telemetry(&["a", "b", "c"])).await;
    let sent = queue.take_unsent(2);
    assert_eq!(payloads(&sent), ["a", "b"]);
    assert_eq!(payloads(&queue.take_unsent(10)), ["c"]);
    assert!(queue.take_unsent(10).is_empty());
    queue.ack(sent[0].id);
    assert_eq!(queue.depth(), (2, capacity(2, 2)));
    // Session lost before "b" and "c" were acknowledged: both are sent again, in order.
    queue.rewind();
    assert_eq!(payloads(&queue.take_unsent(10)), ["b", "c"]);
}

#[tokio::test]
async fn out_of_order_acks_keep_older_records_until_they_are_acknowledged() {
    let queue = Queue::in_memory(1 << 20, FullPolicy::Block);
    queue.push(telemetry(&["a", "b", "c"])).await;
    let sent = queue.take_unsent(10);
    queue.ack(sent[2].id);
    queue.ack(sent[1].id);
    assert_eq!(
        queue.depth().0,
        3,
        "a is not acknowledged, nothing may leave"
    );
    queue.rewind();
    assert_eq!(
        payloads(&queue.take_unsent(10)),
        ["a"],
        "acknowledged records are not resent"
    );
    queue.ack(sent[0].id);
    assert_eq!(queue.depth(), (0, 0));
}

#[tokio::test]
async fn drop_newest_keeps_the_queue_and_counts_the_new_records() {
    let queue = Queue::in_memory(capacity(4, 2), FullPolicy::DropNewest);
    let pushed = queue.push(telemetry(&["aa", "bb", "cc"])).await;
    assert_eq!(pushed.accepted, 2);
    assert_eq!(pushed.dropped_new, 1);
    assert_eq!(payloads(&queue.take_unsent(10)), ["aa", "bb"]);
}

#[tokio::test]
async fn drop_newest_keeps_dropping_until_a_record_left() {
    let queue = Queue::in_memory(capacity(5, 3), FullPolicy::DropNewest);
    let pushed = queue.push(telemetry(&["aa", "bb", "cc"])).await;
    assert_eq!((pushed.accepted, pushed.dropped_new), (2, 1));
    // "d" would fit in the room left, but it is newer than the dropped "cc".
    let pushed = queue.push(telemetry(&["d"])).await;
    assert_eq!((pushed.accepted, pushed.dropped_new), (0, 1));
    let sent = queue.take_unsent(1);
    queue.ack(sent[0].id);
    let pushed = queue.push(telemetry(&["e"])).await;
    assert_eq!(pushed.accepted, 1);
    queue.rewind();
    assert_eq!(payloads(&queue.take_unsent(10)), ["bb", "e"]);
}

#[tokio::test]
async fn drop_oldest_makes_room_for_new_records() {
    let queue = Queue::in_memory(capacity(4, 2), FullPolicy::DropOldest);
    queue.push(telemetry(&["aa", "bb"])).await;
    let pushed = queue.push(telemetry(&["cc"])).await;
    assert_eq!((pushed.accepted, pushed.dropped_old), (1, 1));
    assert_eq!(payloads(&queue.take_unsent(10)), ["bb", "cc"]);
    // A record of one push can push out an older one of the same push.
    let pushed = queue.push(telemetry(&["dd", "ee"])).await;
    assert_eq!((pushed.accepted, pushed.dropped_old), (2, 2));
    queue.rewind();
    assert_eq!(payloads(&queue.take_unsent(10)), ["dd", "ee"]);
}

#[tokio::test]
async fn block_waits_for_room_and_then_accepts() {
    let queue = Queue::in_memory(capacity(4, 2), FullPolicy::Block);
    queue.push(telemetry(&["aa", "bb"])).await;
    let pusher = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.push(telemetry(&["cc"])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !pusher.is_finished(),
        "the queue is full, the push must wait"
    );
    let sent = queue.take_unsent(1);
    queue.ack(sent[0].id);
    let pushed = tokio::time::timeout(Duration::from_secs(5), pusher)
        .await
        .expect("push resumes once a record left")
        .expect("push task");
    assert_eq!(pushed.accepted, 1);
    assert_eq!(payloads(&queue.take_unsent(10)), ["bb", "cc"]);
}

#[tokio::test]
async fn a_record_larger_than_the_queue_goes_into_an_empty_queue() {
    let queue = Queue::in_memory(2, FullPolicy::Block);
    let pushed = queue.push(telemetry(&["too large"])).await;
    assert_eq!(pushed.accepted, 1);
}

#[tokio::test]
async fn the_disk_queue_replays_unacknowledged_records_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = QueueSettings {
        storage: Storage::Disk {
            directory: dir.path().to_path_buf(),
            fsync: Fsync::Never,
        },
        max_bytes: 1 << 20,
        full_policy: FullPolicy::Block,
    };
    {
        let queue = Queue::open(settings.clone()).expect("open");
        queue
            .push(vec![
                outbound(Topic::Connect, "{\"device\":\"A\"}"),
                Outbound::new(Topic::Telemetry, 3, b"t1".to_vec()),
                outbound(Topic::Telemetry, "t2"),
            ])
            .await;
        let sent = queue.take_unsent(10);
        queue.ack(sent[0].id);
    }
    let queue = Queue::open(settings.clone()).expect("reopen");
    let replayed = queue.take_unsent(10);
    assert_eq!(payloads(&replayed), ["t1", "t2"]);
    assert_eq!(replayed[0].topic, Topic::Telemetry);
    assert_eq!(replayed[0].datapoints, 3);
    // New records continue after the replayed ones.
    queue.push(telemetry(&["t3"])).await;
    assert_eq!(payloads(&queue.take_unsent(10)), ["t3"]);
    for record in &replayed {
        queue.ack(record.id);
    }
    drop(queue);
    let queue = Queue::open(settings).expect("reopen again");
    assert_eq!(payloads(&queue.take_unsent(10)), ["t3"]);
}

#[tokio::test]
async fn the_disk_queue_reads_back_records_beyond_its_memory_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = QueueSettings {
        storage: Storage::Disk {
            directory: dir.path().to_path_buf(),
            fsync: Fsync::Always,
        },
        max_bytes: 64 << 20,
        full_policy: FullPolicy::Block,
    };
    let queue = Queue::open(settings).expect("open");
    let record = "x".repeat(1 << 20);
    let count = (DISK_CACHE_BYTES >> 20) as usize + 3;
    for _ in 0..count {
        queue.push(telemetry(&[record.as_str()])).await;
    }
    let sent = queue.take_unsent(usize::MAX);
    assert_eq!(sent.len(), count);
    assert!(sent.iter().all(|r| r.payload.len() == 1 << 20));
}

#[test]
fn policies_parse_from_their_flag_names() {
    assert_eq!("drop-oldest".parse(), Ok(FullPolicy::DropOldest));
    assert_eq!("block".parse(), Ok(FullPolicy::Block));
    assert!("sometimes".parse::<FullPolicy>().is_err());
    assert_eq!("always".parse(), Ok(Fsync::Always));
    assert_eq!(
        "250ms".parse(),
        Ok(Fsync::Every(Duration::from_millis(250)))
    );
    assert!("0ms".parse::<Fsync>().is_err());
}
