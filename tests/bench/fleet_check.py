#!/usr/bin/env python3
"""Independent cross-check of `bench`: a fleet of slow devices measured from outside the project.

A separate sender process (one TCP connection per device, ONE frame per write, each at its own
instant: the devices' frames spread evenly over each device's period) and a separate subscriber process (paho-mqtt, QoS 1 on
`v1/gateway/telemetry`) measure a connector that is already running, so nothing of the project's
own generator, subscriber or runtime is on the measuring side. The frames are `bench`'s 23-byte
layout (`00001234,83912345678,7\\n`: sequence, send time in microseconds modulo 10^11, connection
digit), so the connector runs `bench`'s socket.json (newline framing, keys seq/sent_us/conn).

    python3 fleet_check.py --device-port 50000 --broker-port 1883 \\
        --connections 1000 --rate 10 --duration 20

Prints one JSON line: frames sent and received, lost, duplicates, telemetry publishes, frames
per publish, and the end-to-end latency (p50/p99/max, ms) from write to arrival at the subscriber.
Needs paho-mqtt 2 (`pip install paho-mqtt`, or the ThingsBoard gateway's venv, which has it).
"""

import argparse
import ctypes
import json
import multiprocessing
import socket
import sys
import time

TIME_MODULUS_US = 10**11
PR_SET_TIMERSLACK = 29
QUIET_S = 3.0


def now_us():
    return time.time_ns() // 1000


def unwrap_sent_us(field, now):
    back = (now % TIME_MODULUS_US + TIME_MODULUS_US - field) % TIME_MODULUS_US
    return now - back


def subscribe(broker_port, ready, stop, results):
    """The subscriber process: counts frames and publishes, records latencies."""
    import paho.mqtt.client as mqtt

    seen = set()
    state = {"duplicates": 0, "publishes": 0, "parse_errors": 0, "last": time.monotonic()}
    latencies = []

    def on_message(_client, _userdata, message):
        arrived = now_us()
        state["publishes"] += 1
        state["last"] = time.monotonic()
        try:
            payload = json.loads(message.payload)
            for entries in payload.values():
                for entry in entries:
                    values = entry["values"]
                    seq = int(values["seq"])
                    if seq in seen:
                        state["duplicates"] += 1
                        continue
                    seen.add(seq)
                    sent = unwrap_sent_us(int(values["sent_us"]), arrived)
                    latencies.append(arrived - sent)
        except (ValueError, KeyError, TypeError, AttributeError):
            state["parse_errors"] += 1

    def on_subscribe(_client, _userdata, _mid, _codes, _properties):
        ready.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-check-{multiprocessing.current_process().pid}"
    )
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_: c.subscribe("v1/gateway/telemetry", qos=1)
    client.connect("127.0.0.1", broker_port, keepalive=30)
    client.loop_start()
    stop.wait(timeout=900)
    client.loop_stop()
    client.disconnect()
    results.put(
        {
            "received": len(seen),
            "duplicates": state["duplicates"],
            "publishes": state["publishes"],
            "parse_errors": state["parse_errors"],
            "latencies_us": sorted(latencies),
        }
    )


def send(args):
    """The sender: one TCP connection per device, then every device's frames at their own instants.

    Device i of n sends at start + (i / n + k) / rate, so frames arrive spread evenly over time as
    independent devices send them. One thread walks that schedule and sleeps between frames
    (with a timer slack of 1 us): an event loop's timer (asyncio's has a resolution of 1 ms)
    would release every frame due within a millisecond at once, and measure the bursts instead.
    """
    try:
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000)
    except (OSError, AttributeError):
        pass
    counts = {"sent": 0, "errors": 0}
    sockets = []
    for index in range(args.connections):
        for _ in range(50):
            try:
                connection = socket.create_connection(("127.0.0.1", args.device_port), timeout=10)
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sockets.append(connection)
                break
            except OSError:
                time.sleep(0.1)
        else:
            counts["errors"] += 1
            sockets.append(None)
        if index % 2000 == 1999:
            time.sleep(0.5)  # at most about 2,000 new connections a second
    n = len(sockets)
    total = int(args.duration * args.rate * n)
    start = time.monotonic() + 0.5
    for k in range(total):
        due = start + k / (args.rate * n)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        index = k % n
        connection = sockets[index]
        if connection is None:
            continue
        frame = f"{k % 10**8:08d},{now_us() % TIME_MODULUS_US:011d},{index % 10}\n"
        try:
            connection.sendall(frame.encode())
            counts["sent"] += 1
        except OSError:
            counts["errors"] += 1
            sockets[index] = None
    for connection in sockets:
        if connection is not None:
            connection.close()
    return counts


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(len(sorted_values) * p))
    return round(sorted_values[index] / 1000.0, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-port", type=int, required=True)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1.0, help="frames/s of each device")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (at most 600)")
    args = parser.parse_args()
    if not (0 < args.duration <= 600 and 0 < args.connections <= 60000 and 0 < args.rate <= 10000):
        sys.exit("--duration in (0, 600], --connections in 1..60000, --rate in (0, 10000]")

    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    subscriber = context.Process(target=subscribe, args=(args.broker_port, ready, stop, results))
    subscriber.start()
    if not ready.wait(timeout=20):
        subscriber.kill()
        sys.exit("the subscriber did not subscribe within 20 s")

    counts = send(args)
    # Frames still on their way: a connector that keeps up delivers within milliseconds, so
    # what has not arrived QUIET_S after the last write counts as lost.
    time.sleep(QUIET_S)
    stop.set()
    received = results.get(timeout=60)
    subscriber.join(timeout=10)

    latencies = received["latencies_us"]
    print(
        json.dumps(
            {
                "connections": args.connections,
                "rate_per_device": args.rate,
                "frames_sent": counts["sent"],
                "frames_received": received["received"],
                "lost": counts["sent"] - received["received"],
                "duplicates": received["duplicates"],
                "telemetry_publishes": received["publishes"],
                "frames_per_publish": round(received["received"] / max(1, received["publishes"]), 2),
                "latency_ms": {
                    "p50": percentile(latencies, 0.50),
                    "p99": percentile(latencies, 0.99),
                    "max": percentile(latencies, 1.0),
                },
                "sender_errors": counts["errors"],
                "parse_errors": received["parse_errors"],
            }
        )
    )


if __name__ == "__main__":
    main()
