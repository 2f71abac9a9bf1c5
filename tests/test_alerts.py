"""deploy/prometheus: the alert rules pass ``promtool check rules`` and fire (and stay quiet)
on the series Ajour exports, by ``promtool test rules``; the scrape config is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian: apt install prometheus; scripts/setup does)"
)

# promtool's unit tests: series per minute, alerts expected at given times
TESTS = {
    "evaluation_interval": "1m",
    "tests": [
        {  # queued builds, none started since time 0: stuck after 30 + 5 minutes; an idle
           # queue is not
            "interval": "1m",
            "input_series": [
                {"series": 'ajour_build_queue_depth{instance="b:8080",job="ajour-build"}',
                 "values": "2x50"},
                {"series": 'ajour_build_last_build_start_timestamp_seconds{instance="b:8080",'
                           'job="ajour-build"}', "values": "0x50"},
                {"series": 'ajour_build_queue_depth{instance="c:8080",job="ajour-build"}',
                 "values": "0x50"},
                {"series": 'ajour_build_last_build_start_timestamp_seconds{instance="c:8080",'
                           'job="ajour-build"}', "values": "0x50"},
            ],
            "alert_rule_test": [
                {"eval_time": "33m", "alertname": "AjourBuildQueueStuck", "exp_alerts": []},
                {"eval_time": "40m", "alertname": "AjourBuildQueueStuck", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "instance": "b:8080",
                                    "job": "ajour-build"}},
                ]},
            ],
        },
        {  # a build started a minute ago: busy, not stuck
            "interval": "1m",
            "input_series": [
                {"series": 'ajour_build_queue_depth{instance="b:8080",job="ajour-build"}',
                 "values": "3x50"},
                {"series": 'ajour_build_last_build_start_timestamp_seconds{instance="b:8080",'
                           'job="ajour-build"}', "values": "0+60x50"},
            ],
            "alert_rule_test": [
                {"eval_time": "45m", "alertname": "AjourBuildQueueStuck", "exp_alerts": []},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": 'ajour_build_webhooks_total{instance="b:8080",job="ajour-build",'
                           'provider="github",outcome="bad_signature"}', "values": "0+1x20"},
                {"series": 'ajour_build_webhooks_total{instance="b:8080",job="ajour-build",'
                           'provider="gitlab",outcome="bad_signature"}', "values": "0x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "16m", "alertname": "AjourWebhookSignaturesFailing", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "instance": "b:8080",
                                    "job": "ajour-build", "provider": "github"}},
                ]},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": 'ajour_delivery_rollout_state{application="fw",state="paused"}',
                 "values": "0 0 1x20"},
                {"series": 'ajour_delivery_rollout_state{application="fw",state="running"}',
                 "values": "1 1 0x20"},
                {"series": 'ajour_delivery_rollout_state{application="gw",state="paused"}',
                 "values": "0x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "AjourRolloutPaused", "exp_alerts": []},
                {"eval_time": "13m", "alertname": "AjourRolloutPaused", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "application": "fw"}},
                ]},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": 'ajour_delivery_source_errors_total{instance="d:8081",'
                           'job="ajour-delivery"}', "values": "0+30x30"},
                {"series": 'ajour_delivery_statuses_total{instance="d:8081",'
                           'job="ajour-delivery",outcome="rejected"}', "values": "0x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "AjourDeliveryErrors", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "instance": "d:8081",
                                    "job": "ajour-delivery"}},
                ]},
            ],
        },
    ],
}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_the_rules_are_well_formed_yaml_with_what_each_alert_needs() -> None:
    groups = yaml.safe_load((DEPLOY / "ajour-alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} == {
        "AjourBuildQueueStuck",
        "AjourWebhookSignaturesFailing",
        "AjourRolloutPaused",
        "AjourDeliveryErrors",
    }
    for rule in rules:
        assert rule["expr"].strip() and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    checked = promtool("check", "rules", str(DEPLOY / "ajour-alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the expressions are under test here, not the annotations' wording
    groups = yaml.safe_load((DEPLOY / "ajour-alerts.yml").read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(groups))
    spec = {"rule_files": [str(tmp_path / "rules.yml")], **TESTS}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec))
    tested = promtool("test", "rules", str(tmp_path / "tests.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_the_scrape_config_is_valid(tmp_path: Path) -> None:
    config = (DEPLOY / "prometheus.yml").read_text()
    for name in ("ajour-build.token", "ajour-delivery-status.token"):
        (tmp_path / name).write_text("token\n")
        config = config.replace(f"/etc/prometheus/{name}", str(tmp_path / name))
    shutil.copy(DEPLOY / "ajour-alerts.yml", tmp_path / "ajour-alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config)
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
