#!/usr/bin/env python3
"""Run the reference ThingsBoard IoT Gateway (PyPI thingsboard-gateway 3.8.x)
with exactly one socket connector, against a local MQTT broker.

Run it with the venv python printed by install.sh:

    $PY run_gateway.py --mqtt-host 127.0.0.1 --mqtt-port 1883 --token TOKEN \
        --socket-config socket.json --workdir /tmp/gw [--qos 1]

It writes into WORKDIR: tb_gateway.json, logs.json, a copy of the socket
config (named socket.json), and a logs/ folder; then runs the gateway in this
process (same PID, foreground) until SIGTERM or SIGINT and exits with 0.

Everything that would reach outside the machine is neutralised:
  * the update-check POST goes through a dead loopback proxy (127.0.0.1:9);
  * remote shell, statistics, latency debug, device inactivity checks, gRPC
    and device filtering are off; so is remote configuration unless
    --remote-configuration;
  * storage is in memory.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time

DEAD_PROXY = "http://127.0.0.1:9"

# Environment variables that TBUtility.get_service_environmental_variables()
# (and the TB client) would merge into the "thingsboard" section, silently
# overriding our config. Generic names like "username"/"host" are common in
# CI environments, so they are removed from the gateway's environment.
_OVERRIDING_ENV = (
    "host", "port", "type", "accessToken", "caCert", "privateKey", "cert",
    "clientId", "password", "username", "proxy_host", "proxy_port",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--token", required=True, help="gateway access token (MQTT username)")
    p.add_argument("--socket-config", required=True, help="socket connector JSON config")
    p.add_argument("--workdir", required=True, help="config/log directory (created)")
    p.add_argument("--qos", type=int, default=1, choices=(0, 1))
    p.add_argument("--log-level", default="INFO",
                   help="level of the gateway's own loggers (DEBUG shows MQTT traffic)")
    p.add_argument("--remote-configuration", action="store_true",
                   help="let ThingsBoard's UI configure the connector (thingsboard.remoteConfiguration)")
    p.add_argument("--write-only", action="store_true",
                   help="only write the config files, do not start the gateway")
    return p.parse_args(argv)


def gateway_config(args, connector_name, connector_file):
    return {
        "thingsboard": {
            "host": args.mqtt_host,
            "port": args.mqtt_port,
            "remoteShell": False,
            "remoteConfiguration": args.remote_configuration,
            "latencyDebugMode": False,
            "statistics": {
                "enable": False,
                "enableCustom": False,
                "statsSendPeriodInSeconds": 3600,
                "customStatsSendPeriodInSeconds": 3600,
            },
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 8196,
            "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60,
            "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": args.token},
            "qos": args.qos,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {
                "checkDeviceInactivity": False,
                "inactivityTimeoutSeconds": 300,
                "inactivityCheckPeriodSeconds": 10,
            },
            # For a non-cloud host these resolve to "no limit" ("0:0,").
            "rateLimits": "DEFAULT_TELEMETRY_RATE_LIMIT",
            "dpRateLimits": "DEFAULT_TELEMETRY_DP_RATE_LIMIT",
            "messagesRateLimits": "DEFAULT_MESSAGES_RATE_LIMIT",
            "deviceMessagesRateLimits": "DEFAULT_MESSAGES_RATE_LIMIT",
            "deviceRateLimits": "DEFAULT_TELEMETRY_RATE_LIMIT",
            "deviceDpRateLimits": "DEFAULT_TELEMETRY_DP_RATE_LIMIT",
        },
        "storage": {
            "type": "memory",
            "read_records_count": 100,
            "max_records_count": 100000,
        },
        "grpc": {"enabled": False},
        "connectors": [
            {"type": "socket", "name": connector_name, "configuration": connector_file},
        ],
    }


def logs_config(log_dir, level):
    def fh(name):
        return {
            "class": "thingsboard_gateway.tb_utility.tb_rotating_file_handler.TimedRotatingFileHandler",
            "formatter": "LogFormatter",
            "filename": os.path.join(log_dir, name + ".log"),
            "backupCount": 1,
            "interval": 3,
            "when": "D",
            "maxBytes": 0,
            "encoding": "utf-8",
        }

    names = ["service", "connector", "converter", "tb_connection", "storage", "extension", "database"]
    handlers = {n + "Handler": fh(n) for n in names}
    handlers["consoleHandler"] = {
        "class": "logging.StreamHandler",
        "formatter": "LogFormatter",
        "level": 0,
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "LogFormatter": {
                "class": "logging.Formatter",
                "format": "%(asctime)s.%(msecs)03d - |%(levelname)s| - [%(filename)s] - %(module)s"
                          " - %(funcName)s - %(lineno)d - %(message)s",
                "datefmt": "%Y-%m-%d %H:%M:%S",
            }
        },
        "handlers": handlers,
        "loggers": {
            n: {"handlers": [n + "Handler", "consoleHandler"], "level": level, "propagate": False}
            for n in names
        },
        "root": {"level": "ERROR", "handlers": ["consoleHandler"]},
    }


def prepare_workdir(args):
    workdir = os.path.abspath(args.workdir)
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir, exist_ok=True)

    with open(args.socket_config, "r", encoding="utf-8") as f:
        socket_conf = json.load(f)
    # ThingsBoard overwrites the connector's "name" with connectors[].name from
    # tb_gateway.json, so both are the same name.
    connector_name = socket_conf.get("name") or "Socket Connector"
    socket_conf["name"] = connector_name
    connector_file = "socket.json"
    # The gateway adds an "id" to this copy on first load; the original stays untouched.
    with open(os.path.join(workdir, connector_file), "w", encoding="utf-8") as f:
        json.dump(socket_conf, f, indent=2)

    with open(os.path.join(workdir, "tb_gateway.json"), "w", encoding="utf-8") as f:
        json.dump(gateway_config(args, connector_name, connector_file), f, indent=2)
    with open(os.path.join(workdir, "logs.json"), "w", encoding="utf-8") as f:
        json.dump(logs_config(log_dir, args.log_level), f, indent=2)

    # State the gateway persists between runs; remove it so every run starts
    # from scratch (otherwise saved devices are re-"connected" at start).
    for stale in ("connected_devices.json", "persistent_keys.json", ".credentials"):
        try:
            os.remove(os.path.join(workdir, stale))
        except FileNotFoundError:
            pass
    shutil.rmtree(os.path.join(workdir, "data"), ignore_errors=True)
    return workdir, log_dir


def prepare_environment(workdir, log_dir):
    for name in _OVERRIDING_ENV:
        os.environ.pop(name, None)
    for name in list(os.environ):
        if name.startswith("TB_GW_") or name == "TB_DEFAULT_RATE_LIMIT_PERCENTAGE":
            os.environ.pop(name, None)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ[name] = DEAD_PROXY
    for name in ("NO_PROXY", "no_proxy"):
        os.environ.pop(name, None)
    os.environ["TB_GW_CONFIG_DIR"] = workdir + os.sep
    os.environ["TB_GW_LOGS_PATH"] = log_dir
    os.environ["PYTHONUNBUFFERED"] = "1"


STOP_GRACE_SECONDS = 15
_state = {"gateway": None, "stopping": False}


def _force_exit_later():
    time.sleep(STOP_GRACE_SECONDS)
    print("run_gateway: gateway did not stop within %ss, exiting" % STOP_GRACE_SECONDS,
          file=sys.stderr, flush=True)
    os._exit(0)


def _on_stop_signal(signum, _frame):
    if _state["stopping"]:
        return
    _state["stopping"] = True
    gateway = _state["gateway"]
    if gateway is None:
        # Nothing has been started yet (no MQTT connection, no socket).
        os._exit(0)
    threading.Thread(target=_force_exit_later, daemon=True).start()
    # What the gateway's own SIGINT handler does: a clean stop (closes the
    # connector, publishes v1/gateway/disconnect, MQTT DISCONNECT); the
    # constructor's main loop then returns.
    gateway._TBGatewayService__stop_gateway()


def install_stop_handling():
    """SIGTERM and SIGINT both stop the gateway cleanly.

    The gateway installs a SIGINT-only handler itself and relies on
    KeyboardInterrupt otherwise, which can get lost early in start-up; instead
    the instance is captured as soon as it exists and stopped directly.
    """
    signal.signal(signal.SIGTERM, _on_stop_signal)
    signal.signal(signal.SIGINT, _on_stop_signal)


def hook_gateway_class():
    import thingsboard_gateway.gateway.tb_gateway_service as svc
    # Keep our handlers: the gateway would replace the SIGINT one.
    svc.signal = lambda *_args, **_kwargs: None
    cls = svc.TBGatewayService
    original = cls._TBGatewayService__init_variables

    def init_variables(self):
        original(self)
        _state["gateway"] = self
        if _state["stopping"]:
            os._exit(0)

    cls._TBGatewayService__init_variables = init_variables
    return svc


def main(argv=None):
    args = parse_args(argv)
    workdir, log_dir = prepare_workdir(args)
    if args.write_only:
        print(workdir)
        return 0
    prepare_environment(workdir, log_dir)
    os.chdir(workdir)

    install_stop_handling()

    exit_code = 0
    try:
        svc = hook_gateway_class()
        # Blocks (runs the gateway's main loop) until the gateway is stopped.
        svc.TBGatewayService(os.path.join(workdir, "tb_gateway.json"))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001
        print("run_gateway: gateway failed: %r" % (e,), file=sys.stderr)
        exit_code = 1
    finally:
        try:
            import logging
            logging.shutdown()
        except Exception:  # noqa: BLE001
            pass
        sys.stdout.flush()
        sys.stderr.flush()
    # Some gateway threads are not daemons (paho loop, executors); don't wait for them.
    os._exit(exit_code)


if __name__ == "__main__":
    main()
