"""The console stays light for delivery and the browser: paged devices, cached status."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.console_app import client, lite, stub_delivery


def rows(count: int) -> list[dict[str, object]]:
    return [
        {"application": "fw", "device": f"dev{i:04d}", "current": "1.0.0", "target": "1.0.0",
         "state": "Synced", "source": "container", "detail": "", "lastSeen": 1.0}
        for i in range(count)
    ]  # fmt: skip


def shown(html: str) -> list[str]:
    return re.findall(r'data-device="fw/(dev\d{4})"', html)


def test_devices_are_paged(tmp_path: Path) -> None:
    with stub_delivery(rows(450)) as stub, lite(tmp_path, delivery_url=stub) as svc:
        with client(svc.url) as c:
            overview = c.get("/devices").text
            first = c.get("/devices/fw").text
            third = c.get("/devices/fw?page=3").text
            beyond = c.get("/devices/fw?page=9")
            bad = c.get("/devices/fw?page=zero")
            fragment = c.get("/devices/fw?page=2&fragment=devices").text
    # the fleet's own d1 and d2 sort first, then the 450 devices delivery reports
    assert shown(overview) == [f"dev{i:04d}" for i in range(48)]
    assert "All devices of fw" in overview
    assert shown(first)[0] == "dev0000" and len(shown(first)) == 198
    assert "Devices 1\u2013200 of 452." in first
    assert 'rel="next"' in first and 'rel="prev"' not in first
    assert shown(third) == [f"dev{i:04d}" for i in range(398, 450)]
    assert "Devices 401\u2013452 of 452." in third
    assert 'rel="prev"' in third and 'rel="next"' not in third
    assert beyond.status_code == 200 and "No devices on page 9" in beyond.text
    assert bad.status_code == 400 and "not a page number" in bad.text
    assert shown(fragment)[0] == "dev0198"  # live updates keep the page


def test_polling_tabs_share_one_status_read_per_second(tmp_path: Path) -> None:
    calls: list[str] = []
    with stub_delivery(rows(3), seen=calls) as stub:
        with lite(tmp_path, delivery_url=stub) as svc, client(svc.url) as c:
            for _ in range(10):  # ten tabs polling at once
                assert c.get("/devices?fragment=devices").status_code == 200
            assert calls == ["/v1/status"]
            c.get("/devices/fw?fragment=devices")
            assert calls == ["/v1/status", "/v1/status/fw"]  # per application
            deadline = time.monotonic() + 5
            while len(calls) < 3:  # after a second the next poll reads again
                assert time.monotonic() < deadline, calls
                c.get("/devices?fragment=devices")
                time.sleep(0.1)
            assert calls[2] == "/v1/status"
