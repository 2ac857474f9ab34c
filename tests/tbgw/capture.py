#!/usr/bin/env python3
"""End-to-end capture with the reference gateway (stdlib only; any python3).

Starts a private mosquitto on a free loopback port, peer.py (subscribed to "#",
answering getSessionLimits), and run_gateway.py with the given socket config;
waits until the connector's port is bound, sends frames, waits, stops
everything (SIGTERM) and prints one JSON document on stdout:

    {"timing": {...}, "messages": [{"topic":..., "payload":..., "ts":...}, ...]}

Example:
    PY=$(bash tests/tbgw/install.sh | tail -n1)
    python3 tests/tbgw/capture.py --python "$PY" --frames 2345 --frames 2345
    python3 tests/tbgw/capture.py --python "$PY" --udp --frames 2345

"ts" values and the timing block are milliseconds relative to the gateway
process start. The default socket config is the one from NOTES.md; --config
takes another (its socket.port/type are overwritten with a free port and
--udp/--tcp).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULT_SOCKET_CONFIG = {
    "name": "TCP Connector",
    "logLevel": "INFO",
    "enableRemoteLogging": False,
    "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0, "bufferSize": 1024},
    "devices": [{
        "address": "*:*",
        "deviceName": "Device Example",
        "deviceType": "default",
        "encoding": "utf-8",
        "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1},
                      {"key": "hum", "byteFrom": 0, "byteTo": 2}],
        "attributes": [{"key": "name", "byteFrom": 0, "byteTo": -1},
                       {"key": "num", "byteFrom": 2, "byteTo": 4}],
        "attributeRequests": [], "attributeUpdates": [], "serverSideRpc": [],
    }],
}


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_bound(port, udp):
    """True once something listens (TCP) / is bound (UDP) on 127.0.0.1:port (reads /proc/net)."""
    path = "/proc/net/udp" if udp else "/proc/net/tcp"
    want = "0100007F:%04X" % port
    try:
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and (udp or parts[3] == "0A"):
                    return True
    except OSError:
        pass
    return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="venv python from install.sh")
    ap.add_argument("--config", help="socket connector config (default: the NOTES.md one)")
    ap.add_argument("--udp", action="store_true")
    ap.add_argument("--frames", action="append", default=None, help="frame text (repeatable)")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds between frames")
    ap.add_argument("--new-connection-per-frame", action="store_true")
    ap.add_argument("--early", action="store_true",
                    help="send as soon as the port is bound (do not wait for the session-limits answer)")
    ap.add_argument("--no-answer", action="store_true", help="peer does not answer getSessionLimits")
    ap.add_argument("--answer-delay", type=float, default=0.0,
                    help="peer answers getSessionLimits after this many seconds")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after the last frame")
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--token", default="TEST_GATEWAY_TOKEN")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed on stderr)")
    ap.add_argument("--broker-log", action="store_true",
                    help='add mosquitto\'s verbose log ("log_type all") as "broker_log"')
    args = ap.parse_args(argv)
    frames = args.frames or ["2345"]

    tmp = tempfile.mkdtemp(prefix="tbgw-capture-")
    procs = []
    try:
        conf = DEFAULT_SOCKET_CONFIG
        if args.config:
            with open(args.config) as f:
                conf = json.load(f)
        conf = json.loads(json.dumps(conf))
        dev_port = free_port(socket.SOCK_DGRAM if args.udp else socket.SOCK_STREAM)
        conf.setdefault("socket", {})
        conf["socket"]["port"] = dev_port
        conf["socket"]["address"] = "127.0.0.1"
        conf["socket"]["type"] = "UDP" if args.udp else "TCP"
        conf_path = os.path.join(tmp, "socket-in.json")
        with open(conf_path, "w") as f:
            json.dump(conf, f)

        mqtt_port = free_port()
        with open(os.path.join(tmp, "mosquitto.conf"), "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % mqtt_port)
            if args.broker_log:
                f.write("log_dest stderr\nlog_type all\n")
        mosq = subprocess.Popen(["mosquitto", "-c", os.path.join(tmp, "mosquitto.conf")],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "mosquitto.log"), "w"))
        procs.append(mosq)
        deadline = time.monotonic() + 10
        while not port_bound(mqtt_port, False):
            if time.monotonic() > deadline or mosq.poll() is not None:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.02)

        peer_cmd = [args.python, os.path.join(HERE, "peer.py"), "--port", str(mqtt_port), "--meta", "--raw",
                    "--ready-file", os.path.join(tmp, "peer.ready")]
        if args.no_answer:
            peer_cmd.append("--no-answer")
        if args.answer_delay:
            peer_cmd += ["--answer-delay", str(args.answer_delay)]
        peer_out = open(os.path.join(tmp, "peer.jsonl"), "w")
        peer = subprocess.Popen(peer_cmd, stdout=peer_out, stderr=open(os.path.join(tmp, "peer.err"), "w"))
        procs.append(peer)
        deadline = time.monotonic() + 15
        while not os.path.exists(os.path.join(tmp, "peer.ready")):
            if time.monotonic() > deadline or peer.poll() is not None:
                raise RuntimeError("peer did not start")
            time.sleep(0.02)

        workdir = os.path.join(tmp, "gw")
        gw_cmd = [args.python, os.path.join(HERE, "run_gateway.py"), "--mqtt-host", "127.0.0.1",
                  "--mqtt-port", str(mqtt_port), "--token", args.token, "--socket-config", conf_path,
                  "--workdir", workdir, "--qos", str(args.qos)]
        t0_wall = time.time()
        t0 = time.monotonic()
        gw = subprocess.Popen(gw_cmd, stdout=open(os.path.join(tmp, "gw.out"), "w"),
                              stderr=open(os.path.join(tmp, "gw.err"), "w"))
        procs.append(gw)

        def rel(t):
            return round((t - t0) * 1000, 1)

        timing = {}
        deadline = time.monotonic() + 60
        while not port_bound(dev_port, args.udp):
            if time.monotonic() > deadline or gw.poll() is not None:
                raise RuntimeError("gateway did not bind its port (see %s)" % tmp)
            time.sleep(0.01)
        timing["port_bound_ms"] = rel(time.monotonic())

        def peer_lines():
            with open(os.path.join(tmp, "peer.jsonl")) as f:
                return [json.loads(line) for line in f if line.strip()]

        if not args.early and not args.no_answer:
            deadline = time.monotonic() + 30
            while not any(m["topic"].startswith("v1/devices/me/rpc/request/") for m in peer_lines()):
                if time.monotonic() > deadline:
                    raise RuntimeError("no getSessionLimits request seen")
                time.sleep(0.01)
            timing["session_limits_request_seen_ms"] = rel(time.monotonic())
            time.sleep(0.5)

        sends = []
        sock = None
        for i, frame in enumerate(frames):
            data = frame.encode("utf-8")
            if args.udp:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sends.append(rel(time.monotonic()))
                s.sendto(data, ("127.0.0.1", dev_port))
                s.close()
            else:
                if sock is None or args.new_connection_per_frame:
                    if sock is not None:
                        sock.close()
                    sock = socket.create_connection(("127.0.0.1", dev_port), timeout=5)
                sends.append(rel(time.monotonic()))
                sock.sendall(data)
            if i + 1 < len(frames):
                time.sleep(args.gap)
        time.sleep(args.settle)
        if sock is not None:
            sock.close()
            time.sleep(0.5)
        timing["frames_sent_ms"] = sends

        t_stop = time.monotonic()
        timing["sigterm_ms"] = rel(t_stop)
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
            timing["gateway_killed"] = True
        timing["gateway_exit_code"] = gw.returncode
        timing["gateway_stop_duration_ms"] = round((time.monotonic() - t_stop) * 1000, 1)
        time.sleep(0.5)

        msgs = peer_lines()
        for m in msgs:
            m["ts"] = round(m["ts"] - t0_wall * 1000, 1)
        data_msgs = [m for m in msgs if m["topic"] == "v1/gateway/telemetry"]
        if data_msgs:
            timing["first_device_telemetry_ms"] = data_msgs[0]["ts"]
            timing["telemetry_after_send_ms"] = [
                round(m["ts"] - s, 1) for m, s in zip(data_msgs, sends)]
        result = {"timing": timing, "messages": msgs}
        if args.broker_log:
            mosq.terminate()
            mosq.wait(timeout=10)
            with open(os.path.join(tmp, "mosquitto.log")) as f:
                result["broker_log"] = [line.rstrip("\n") for line in f]
        print(json.dumps(result, indent=1))
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if args.keep:
            print("capture: kept %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
