"""The worklist HTTP API, through Starlette's TestClient (no sockets)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dicomnode.telemetry import Telemetry
from dicomnode.worklist.store import WorklistStore
from dicomnode.worklist.web import COOKIE, WebServer, create_app
from tests.unit.worklist.helpers import tiny_png, triage_entry

TOKEN = "s3cret-token"
VIEWER = "http://pacs:8042/viewer?study={study_uid}&acc={accession_number}"
HEALTHY: dict[str, Any] = {"dicom_listener": True, "engines_loaded": ["anomaly_triage"], "outbox_backlog": {}}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WorklistStore]:
    store = WorklistStore(tmp_path / "index.sqlite3")
    store.record_result(triage_entry("1.2.3.1", "routine", 12.5, arrived_at=100.0,
                                     thumbnail=tiny_png((9, 9, 9))))
    store.record_result(triage_entry("1.2.3.2", "critical", 91.0, arrived_at=200.0,
                                     accession_number="A&B 2", thumbnail=tiny_png((255, 0, 0)),
                                     warnings=("a slice may be missing",), frame_number=8))
    store.record_failure("1.2.3.3", "engine failed: out of memory", accession_number="ACC3", arrived_at=300.0)
    yield store
    store.close()


def client_for(store: WorklistStore, *, token: str | None = None, health: dict[str, Any] | None = None,
               telemetry: Telemetry | None = None) -> TestClient:
    status = HEALTHY if health is None else health
    app = create_app(store, token=token, viewer_url=VIEWER, health=lambda: status,
                     metrics=telemetry or Telemetry())
    return TestClient(app)


def test_worklist_is_most_urgent_first_with_links(store: WorklistStore) -> None:
    response = client_for(store).get("/api/worklist")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [i["study_uid"] for i in items] == ["1.2.3.2", "1.2.3.3", "1.2.3.1"]
    critical, failed, routine = items
    assert critical["category"] == "critical" and critical["score"] == 91.0
    assert critical["thumbnail_url"] == "/api/studies/1.2.3.2/thumbnail.png"
    assert critical["viewer_url"] == "http://pacs:8042/viewer?study=1.2.3.2&acc=A%26B%202"
    assert critical["waiting_seconds"] > 0 and critical["acknowledged"] is False
    assert failed["state"] == "failed" and failed["error"] == "engine failed: out of memory"
    assert failed["thumbnail_url"] is None
    assert routine["category"] == "routine"


def test_filters_by_query_parameters(store: WorklistStore) -> None:
    client = client_for(store)

    def uids(query: str) -> list[str]:
        return [i["study_uid"] for i in client.get(f"/api/worklist?{query}").json()["items"]]

    assert uids("category=routine") == ["1.2.3.1"]
    assert uids("category=critical&state=done") == ["1.2.3.2"]
    assert uids("state=failed") == ["1.2.3.3"]
    client.post("/api/worklist/1.2.3.1/ack?by=dr%20a")
    unacked = client.get("/api/worklist?acknowledged=false").json()["items"]
    assert [i["study_uid"] for i in unacked] == ["1.2.3.2", "1.2.3.3"]
    acked = client.get("/api/worklist?acknowledged=true").json()["items"]
    assert [i["study_uid"] for i in acked] == ["1.2.3.1"]


@pytest.mark.parametrize("query", ["category=severe", "state=running", "acknowledged=maybe"])
def test_bad_filters_are_400(store: WorklistStore, query: str) -> None:
    response = client_for(store).get(f"/api/worklist?{query}")
    assert response.status_code == 400
    assert "error" in response.json()


def test_acknowledge_with_json_body(store: WorklistStore) -> None:
    client = client_for(store)
    response = client.post("/api/worklist/1.2.3.2/ack", json={"by": "Dr House"})
    assert response.status_code == 200
    body = response.json()
    assert body["acknowledged"] is True and body["acknowledged_by"] == "Dr House"
    details = client.get("/api/studies/1.2.3.2").json()
    assert details["acknowledged_by"] == "Dr House" and details["acknowledged_at"] is not None


def test_acknowledge_needs_a_name_and_a_known_study(store: WorklistStore) -> None:
    client = client_for(store)
    assert client.post("/api/worklist/1.2.3.2/ack").status_code == 400
    assert client.post("/api/worklist/1.2.3.2/ack", json={"by": "  "}).status_code == 400
    assert client.post("/api/worklist/1.2.3.2/ack", json={"by": "x" * 65}).status_code == 400
    response = client.post("/api/worklist/9.9.9/ack", json={"by": "dr a"})
    assert response.status_code == 404
    assert client.get("/api/worklist").json()["items"][0]["acknowledged"] is False


def test_study_details_and_thumbnail(store: WorklistStore) -> None:
    client = client_for(store)
    details = client.get("/api/studies/1.2.3.2")
    assert details.status_code == 200
    assert details.json()["top_slice_index"] == 7
    assert details.json()["top_slice_frame_number"] == 8  # the top slice is frame 8 of an enhanced CT
    assert client.get("/api/studies/1.2.3.1").json()["top_slice_frame_number"] is None  # classic slices
    assert details.json()["warnings"] == ["a slice may be missing"]
    assert client.get("/api/studies/1.2.3.1").json()["warnings"] == []
    png = client.get(details.json()["thumbnail_url"])
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content == tiny_png((255, 0, 0))
    assert client.get("/api/studies/9.9.9").status_code == 404
    assert client.get("/api/studies/9.9.9/thumbnail.png").status_code == 404
    assert client.get("/api/studies/1.2.3.3/thumbnail.png").status_code == 404


def test_page_and_its_assets_are_served(store: WorklistStore) -> None:
    client = client_for(store)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Emergency triage worklist" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200, asset
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


def test_token_is_required_everywhere_but_healthz(store: WorklistStore) -> None:
    client = client_for(store, token=TOKEN)
    for path in ("/", "/api/worklist", "/api/studies/1.2.3.2", "/metrics", "/static/app.js",
                 "/api/studies/1.2.3.2/thumbnail.png"):
        assert client.get(path).status_code == 401, path
    assert client.post("/api/worklist/1.2.3.2/ack", json={"by": "x"}).status_code == 401
    assert client.get("/api/worklist", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200


def test_token_in_header_or_cookie(store: WorklistStore) -> None:
    client = client_for(store, token=TOKEN)
    assert client.get("/api/worklist", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    client.cookies.set(COOKIE, TOKEN)
    assert client.get("/api/worklist").status_code == 200
    assert client.post("/api/worklist/1.2.3.2/ack", json={"by": "dr a"}).status_code == 200


def test_page_token_sets_the_cookie_once(store: WorklistStore) -> None:
    client = client_for(store, token=TOKEN)
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    response = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    set_cookie = response.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert client.get("/api/worklist").status_code == 200  # the client kept the cookie
    # The query token opens only the page, not the API.
    assert TestClient(client.app).get(f"/api/worklist?token={TOKEN}").status_code == 401


def test_healthz_reports_and_fails_when_unhealthy(store: WorklistStore) -> None:
    ok = client_for(store).get("/healthz")
    assert ok.status_code == 200
    assert ok.json() == {**HEALTHY, "worklist_db": True, "healthy": True}
    down = client_for(store, health={**HEALTHY, "dicom_listener": False}).get("/healthz")
    assert down.status_code == 503 and down.json()["healthy"] is False
    vetoed = client_for(store, health={**HEALTHY, "healthy": False}).get("/healthz")
    assert vetoed.status_code == 503


def test_healthz_when_the_check_raises(store: WorklistStore) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("listener thread died")

    app = create_app(store, token=None, viewer_url=None, health=broken, metrics=Telemetry())
    response = TestClient(app).get("/healthz")
    assert response.status_code == 503
    assert "listener thread died" in response.json()["error"]


def test_metrics_come_from_the_node_registry(store: WorklistStore) -> None:
    telemetry = Telemetry()
    telemetry.instances_received.inc(3)
    telemetry.association("rejected")
    response = client_for(store, telemetry=telemetry).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "dicomnode_instances_received_total 3.0" in response.text
    assert 'dicomnode_associations_total{result="rejected"} 1.0' in response.text
    assert client_for(store).get("/metrics").text.count("dicomnode_instances_received_total 0.0") == 1


def test_viewer_url_absent_when_not_configured(store: WorklistStore) -> None:
    app = create_app(store, token=None, viewer_url=None, health=lambda: HEALTHY, metrics=Telemetry())
    items = TestClient(app).get("/api/worklist").json()["items"]
    assert all(i["viewer_url"] is None for i in items)


def test_web_server_on_a_free_port_starts_and_stops(store: WorklistStore) -> None:
    app = create_app(store, token=TOKEN, viewer_url=None, health=lambda: HEALTHY, metrics=Telemetry())
    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    port = server.port
    try:
        assert port > 0
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
            assert response.status == 200 and json.load(response)["healthy"] is True
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/api/worklist", timeout=5)
        assert refused.value.code == 401
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_web_server_reports_a_busy_port(store: WorklistStore) -> None:
    app = create_app(store, token=None, viewer_url=None, health=lambda: HEALTHY, metrics=Telemetry())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            WebServer(app, "127.0.0.1", port).start()
