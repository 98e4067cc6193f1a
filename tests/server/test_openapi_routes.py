"""`/openapi.json` is a hand-written document (server/protocols/openapi.py): its paths must be exactly
the routes the app serves for the model, no more and no fewer.

A route counts as served when a request to it answers anything but 404: the app registers every
protocol's routes, and those a model does not offer (embeddings on a classifier, chat on anything but a
language model) answer 404 naming the route to use instead.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from modelpod.server.app import create_app
from modelpod.specfile import load_spec
from tests.server.conftest import ECHO_DIR
from tests.server_process import ServerProcess

# the document and its viewer are not described in the document itself
SELF_DESCRIPTION = {("GET", "/openapi.json"), ("GET", "/docs")}


def app_routes(project: Path) -> set[tuple[str, str]]:
    """(method, path template) of every route the app registers for this project's spec."""
    app = create_app(load_spec(project))  # not started: no model is loaded
    routes = {("POST", route.template) for route in app.routes}
    for route in app.fallback.routes:  # type: ignore[attr-defined]
        routes |= {(method, route.path) for method in route.methods if method != "HEAD"}
    return routes - SELF_DESCRIPTION


def served_routes(url: str, name: str, routes: set[tuple[str, str]]) -> set[tuple[str, str]]:
    served = set()
    for method, template in routes:
        path = template.replace("{name}", name).replace("{version}", "1")
        response = httpx.request(
            method, url + path, content=b"{}", headers={"content-type": "application/json"}, timeout=30
        )
        if response.status_code != 404:
            served.add((method, template))
    return served


def documented_routes(url: str) -> set[tuple[str, str]]:
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def check_document_matches_routes(project: Path, url: str) -> None:
    served = served_routes(url, load_spec(project).name, app_routes(project))
    documented = documented_routes(url)
    assert documented == served, (
        f"documented, not served: {sorted(documented - served)}; served, not documented: "
        f"{sorted(served - documented)}"
    )
    assert ("POST", "/predict") in served  # the check saw real routes, not an empty app


def test_openapi_paths_are_the_served_routes_of_a_classifier(digits_dir, digits_server):
    check_document_matches_routes(digits_dir, digits_server.url)


def test_openapi_paths_are_the_served_routes_of_a_custom_model():
    with ServerProcess(ECHO_DIR) as server:
        check_document_matches_routes(ECHO_DIR, server.url)
