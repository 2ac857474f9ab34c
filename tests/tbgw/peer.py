#!/usr/bin/env python3
"""A tiny stand-in for ThingsBoard on a plain MQTT broker (run with the venv python
from install.sh, which has paho-mqtt 2.x).

It subscribes to "#" (MQTT v5, no-local, QoS 1), answers the gateway's
getSessionLimits RPC the way ThingsBoard CE does with its default settings, and
prints every message it receives as one JSON line on stdout:

    {"topic": "v1/gateway/telemetry", "payload": {...}}

payload is the parsed JSON when the payload is JSON, else the UTF-8 string
(else {"hex": "..."}). With --meta each line also has "ts" (receive time,
epoch ms, float), "qos" and "retain"; with --raw, "raw" (the exact payload
text). Its own publications (the RPC replies) are
not echoed (no-local). When the subscription is acknowledged it prints
"peer: ready" on stderr (and touches --ready-file if given).

Stops on SIGTERM/SIGINT, or after --duration seconds.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

RPC_REQUEST_PREFIX = "v1/devices/me/rpc/request/"
RPC_RESPONSE_PREFIX = "v1/devices/me/rpc/response/"

# What ThingsBoard CE (MqttTransportHandler, gateway session) answers with its
# defaults: transport.mqtt.netty.max_payload_size=65536,
# transport.mqtt.msg_queue_size_per_device_limit=100, and a default tenant
# profile without transport rate limits (null fields, serialised by Jackson).
DEFAULT_SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": {"messages": None, "telemetryMessages": None, "telemetryDataPoints": None},
    "gatewayRateLimits": {"messages": None, "telemetryMessages": None, "telemetryDataPoints": None},
}


def decode(payload: bytes):
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": payload.hex()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", default="#")
    p.add_argument("--limits", default=None,
                   help="JSON object sent as the getSessionLimits answer (default: ThingsBoard CE defaults)")
    p.add_argument("--no-answer", action="store_true", help="do not answer getSessionLimits")
    p.add_argument("--answer-delay", type=float, default=0.0,
                   help="seconds to wait before answering getSessionLimits")
    p.add_argument("--meta", action="store_true", help='add "ts", "qos", "retain" to each line')
    p.add_argument("--raw", action="store_true",
                   help='add "raw": the payload bytes as a string (UTF-8, invalid bytes replaced)')
    p.add_argument("--ready-file", default=None)
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    args = p.parse_args(argv)

    limits = json.loads(args.limits) if args.limits else DEFAULT_SESSION_LIMITS
    limits_payload = json.dumps(limits, separators=(",", ":"))
    out_lock = threading.Lock()
    stop = threading.Event()

    def emit(obj):
        line = json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id="tbgw-peer-%d" % os.getpid(), protocol=mqtt.MQTTv5)

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print("peer: connect failed: %s" % reason_code, file=sys.stderr, flush=True)
            stop.set()
            return
        c.subscribe(args.topic, options=SubscribeOptions(qos=1, noLocal=True))

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        print("peer: ready", file=sys.stderr, flush=True)
        if args.ready_file:
            with open(args.ready_file, "w") as f:
                f.write("ready\n")

    def answer(c, topic, request_id):
        if args.answer_delay > 0:
            time.sleep(args.answer_delay)
        c.publish(RPC_RESPONSE_PREFIX + request_id, limits_payload, qos=1)

    def on_message(c, userdata, msg):
        payload = decode(msg.payload)
        rec = {"topic": msg.topic, "payload": payload}
        if args.meta:
            rec["ts"] = round(time.time() * 1000, 1)
            rec["qos"] = msg.qos
            rec["retain"] = bool(msg.retain)
        if args.raw:
            rec["raw"] = msg.payload.decode("utf-8", "replace")
        emit(rec)
        if (not args.no_answer and msg.topic.startswith(RPC_REQUEST_PREFIX)
                and isinstance(payload, dict) and payload.get("method") == "getSessionLimits"):
            request_id = msg.topic[len(RPC_REQUEST_PREFIX):]
            if args.answer_delay > 0:
                threading.Thread(target=answer, args=(c, msg.topic, request_id), daemon=True).start()
            else:
                answer(c, msg.topic, request_id)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    deadline = time.monotonic() + 10
    while True:
        try:
            client.connect(args.host, args.port, keepalive=60)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print("peer: cannot connect: %s" % e, file=sys.stderr, flush=True)
                return 2
            time.sleep(0.1)
    client.loop_start()
    end = time.monotonic() + args.duration if args.duration else None
    while not stop.is_set():
        if end is not None and time.monotonic() >= end:
            break
        stop.wait(0.1)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
