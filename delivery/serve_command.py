"""The ``ajour-delivery serve`` command: the worker behind HTTP, MQTT and/or CoAP."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from ajour_build.core.fleet import load_fleet
from delivery.errors import DeliveryError
from delivery.fleet_reload import FleetReloader
from delivery.options import FLEET, coap_settings, mqtt_tls_options, mqtt_tls_settings
from delivery.serve_settings import http_settings, poll_policies


def _serve_metrics(http: Any, worker: Any, token: str) -> None:
    """``GET /metrics`` (Prometheus text), behind the status token."""
    from delivery.http_exchange import Response
    from delivery.metrics import CONTENT_TYPE, render

    http.add_route(
        "/metrics",
        lambda _request, _body: Response(200, render(worker.metrics), CONTENT_TYPE),
        token=token,
    )


@click.command(
    epilog="\b\nExamples:\n  ajour-delivery serve --fleet examples/fleet --http 127.0.0.1:8081"
    " --registry oci-layout:///var/lib/ajour/fw\n"
    "  ajour-delivery serve --fleet fleet/ --mqtt mqtt://127.0.0.1:1883 --http 127.0.0.1:8081\n"
    "  ajour-delivery serve --fleet fleet/ --coap 127.0.0.1:5683 --registry oci-layout:///srv/fw\n"
)
@FLEET
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Installation config (default: AJOUR_CONFIG, the fleet's ajour.yaml, ./ajour.yaml).",
)
@click.option("--http", "http_addr", help="Serve HTTP on HOST:PORT (for example 127.0.0.1:8081).")
@click.option(
    "--mqtt",
    "mqtt_urls",
    multiple=True,
    help="Serve MQTT: mqtt[s]://[user:password@]host[:port]; repeat it for each node of"
    " several brokers (the worker joins the shared subscription on every one).",
)
@click.option(
    "--coap",
    "coap_addr",
    help="Serve CoAP (UDP, no DTLS) on HOST:PORT, e.g. 127.0.0.1:5683 (the coap extra).",
)
@click.option(
    "--coap-max-observers",
    type=click.IntRange(0, 1_000_000),
    help="CoAP Observe registrations kept at most (default: 1000).",
)
@mqtt_tls_options
@click.option("--group", help="MQTT shared subscription group (default: ajour).")
@click.option(
    "--drogue-app",
    "drogue_apps",
    multiple=True,
    help="Use Drogue Cloud's MQTT integration (app/<APP> CloudEvents) for APP.",
)
@click.option(
    "--registry",
    default=None,
    help="Registry prefix for container.image, or oci-layout:///dir.",
)
@click.option("--file-dir", type=click.Path(path_type=Path), help="Directory for file firmware.")
@click.option("--store", "store_path", help="SQLite file for device status (default: memory).")
@click.option(
    "--rollout-db",
    help="Staged rollouts, shared by all workers: a SQLite file or postgresql://USER@HOST/DB"
    " (default: memory, per process).",
)
@click.option("--ttl", type=float, help="Tag resolution cache TTL in seconds (default: 30).")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="No authentication at all over HTTP: devices, status, events (loopback only; demos).",
)
@click.option(
    "--status-token",
    envvar="AJOUR_DELIVERY_STATUS_TOKEN",
    help="Bearer token for GET /v1/status (or AJOUR_DELIVERY_STATUS_TOKEN; prefer the env).",
)
@click.option(
    "--events-token",
    envvar="AJOUR_DELIVERY_EVENTS_TOKEN",
    help="Bearer token for POST /v1/events (or AJOUR_DELIVERY_EVENTS_TOKEN; prefer the env).",
)
@click.option(
    "--operator-token",
    envvar="AJOUR_DELIVERY_OPERATOR_TOKEN",
    help="Bearer token for POST /v1/rollouts/APP/ACTION (or AJOUR_DELIVERY_OPERATOR_TOKEN;"
    " without one, rollouts cannot be operated over HTTP).",
)
@click.option("--tls-cert", type=click.Path(path_type=Path), help="HTTPS: certificate chain (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="HTTPS: its private key (PEM).")
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path),
    help="HTTPS: verify client certificates against this CA; CN or SAN <device>@<app> names"
    " the device (passwords still work).",
)
@click.option(
    "--http-max-connections", default=1000, show_default=True, help="Open HTTP connections."
)
@click.option(
    "--http-threads", default=16, show_default=True, help="Threads answering HTTP requests."
)
@click.option(
    "--drain-timeout",
    default=10.0,
    show_default=True,
    help="On SIGTERM, seconds requests in flight may take to finish.",
)
@click.option("--hawkbit-url", help="hawkBit DDI base URL, for hawkbit firmware specs.")
@click.option("--hawkbit-tenant", default="DEFAULT", show_default=True, help="hawkBit tenant.")
@click.option(
    "--poll-synced",
    type=int,
    help="Seconds a synced device waits before its next status.",
)
@click.option(
    "--poll-wait",
    type=int,
    help="Seconds a device waits when there is no firmware to serve.",
)
@click.option(
    "--app-poll",
    "app_polls",
    multiple=True,
    metavar="APP=SYNCED[:WAIT]",
    help="Poll intervals for one application (repeatable).",
)
def serve(
    fleet_paths: tuple[Path, ...],
    config_path: Path | None,
    http_addr: str | None,
    mqtt_urls: tuple[str, ...],
    coap_addr: str | None,
    coap_max_observers: int | None,
    mqtt_ca: Path | None,
    mqtt_cert: Path | None,
    mqtt_key: Path | None,
    group: str | None,
    drogue_apps: tuple[str, ...],
    registry: str | None,
    file_dir: Path | None,
    store_path: str | None,
    rollout_db: str | None,
    ttl: float | None,
    insecure_no_auth: bool,
    status_token: str | None,
    events_token: str | None,
    operator_token: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    http_max_connections: int,
    http_threads: int,
    drain_timeout: float,
    hawkbit_url: str | None,
    hawkbit_tenant: str,
    poll_synced: int | None,
    poll_wait: int | None,
    app_polls: tuple[str, ...],
) -> None:
    """Serve firmware to the fleet's devices until interrupted (HTTP, MQTT and/or CoAP)."""
    from delivery.http import HttpTransport
    from delivery.rollout_db import open_rollout_db
    from delivery.rollouts import Rollouts
    from delivery.sources.trust import load_policy
    from delivery.store import StatusStore
    from delivery.targets import HawkbitSettings, Targets
    from delivery.worker import Worker
    from delivery.worker_config import load_settings

    found = load_settings(config_path, list(fleet_paths), os.environ)
    conf = found.delivery
    http_addr = http_addr or conf.http or None
    mqtt_urls = mqtt_urls or ((conf.mqtt,) if conf.mqtt else ())
    coap_addr = coap_addr or conf.coap or None
    if coap_max_observers is None:
        coap_max_observers = conf.coap_max_observers
    group = group or conf.group
    drogue_apps = drogue_apps or conf.drogue_apps
    registry = registry or found.registry.prefix
    file_dir = file_dir or (Path(conf.file_dir) if conf.file_dir else None)
    store_path = store_path or conf.store
    rollout_db = rollout_db or conf.rollout_db
    ttl = ttl if ttl is not None else conf.ttl
    poll_synced = poll_synced if poll_synced is not None else conf.poll.synced
    poll_wait = poll_wait if poll_wait is not None else conf.poll.wait
    app_polls = (
        *(f"{app}={p.synced}:{p.wait}" for app, p in sorted(conf.app_poll.items())),
        *app_polls,
    )
    hawkbit_url = hawkbit_url or conf.hawkbit_url or None
    tokens = {
        what: [t.get_secret_value() for t in getattr(conf, f"{what}_tokens")]
        for what in ("status", "events")
    }
    status_token = status_token or next(iter(tokens["status"]), None)
    events_token = events_token or next(iter(tokens["events"]), None)
    if not http_addr and not mqtt_urls and not coap_addr:
        raise DeliveryError(
            "give a transport: --http HOST:PORT, --mqtt mqtt://host:port and/or --coap HOST:PORT"
        )
    coap = coap_settings(coap_addr, insecure_no_auth, coap_max_observers)
    mqtt_tls = mqtt_tls_settings(next(iter(mqtt_urls), None), mqtt_ca, mqtt_cert, mqtt_key)
    http_conf = None
    if http_addr:
        http_conf = http_settings(
            http_addr,
            insecure_no_auth,
            status_token,
            events_token,
            (tls_cert, tls_key, tls_client_ca),
            (http_max_connections, http_threads, drain_timeout),
        )
        http_conf.operator_token = operator_token or conf.operator_token.get_secret_value()
    hawkbit = None
    if hawkbit_url:
        token = os.environ.get("AJOUR_HAWKBIT_GATEWAY_TOKEN", "")
        if not token:
            raise DeliveryError(
                "--hawkbit-url needs AJOUR_HAWKBIT_GATEWAY_TOKEN in the environment"
            )
        hawkbit = HawkbitSettings(hawkbit_url, hawkbit_tenant, token)

    trust = {
        app: load_policy(app, policy.keys, policy.builder, policy.source)
        for app, policy in conf.trust.items()
    }

    def make_targets(fleet: Any) -> Targets:
        return Targets(fleet, registry, file_dir, ttl, hawkbit=hawkbit, trust=trust)

    targets = make_targets(load_fleet(list(fleet_paths)))
    policy, policies = poll_policies(poll_synced, poll_wait, app_polls)
    rollouts = Rollouts(open_rollout_db(rollout_db))
    worker = Worker(targets, StatusStore(store_path), policy, policies, rollouts=rollouts)
    reloader = FleetReloader(worker, list(fleet_paths), make_targets)
    started: list[Any] = [reloader]
    reloader.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reloader.reload_now())
    try:
        if http_conf is not None:
            http = HttpTransport(worker, http_conf)
            _serve_metrics(http, worker, http_conf.status_token)
            http.start()
            started.append(http)
            click.echo(f"serving HTTP on {http.url}", err=True)
        for mqtt_url in mqtt_urls:  # one connection per broker node
            from delivery.mqtt import MqttSettings, MqttTransport

            mode = "drogue" if drogue_apps else "ajour"
            settings = MqttSettings(
                url=mqtt_url, group=group, mode=mode, applications=drogue_apps, tls=mqtt_tls
            )
            broker = MqttTransport(worker, settings)
            broker.start()
            started.append(broker)
            click.echo(
                f"serving MQTT as {broker.subscription} at {broker.broker.address}", err=True
            )
        if coap is not None:
            from delivery.coap import CoapTransport

            coap_transport = CoapTransport(worker, coap)
            coap_transport.start()
            started.append(coap_transport)
            click.echo(f"serving CoAP on {coap_transport.url}", err=True)
        click.echo(f"{len(targets.fleet.devices)} devices in the fleet ({found.source})", err=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for transport in reversed(started):
            transport.stop()
