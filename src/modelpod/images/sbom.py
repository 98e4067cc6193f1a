"""A CycloneDX SBOM of the Python environment inside a built image.

The package list comes from the image itself: its own Python lists its distributions through
`importlib.metadata` (run under the same hardened flags, with no network), so the SBOM describes what
was installed, not what the lock asked for. cyclonedx-python-lib turns that list into CycloneDX JSON
with a package URL per component and the dependency graph between them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelpod.images.engine import HARDENED_RUN_FLAGS, Engine
from modelpod.images.errors import EngineError

SCHEMA_VERSION = "1.6"

# runs inside the image with its own python
_LIST_DISTRIBUTIONS = (
    "import json, importlib.metadata as m\n"
    "print(json.dumps([{'name': d.metadata['Name'], 'version': d.version,\n"
    " 'license': d.metadata.get('License-Expression') or '', 'summary': d.metadata.get('Summary') or '',\n"
    " 'requires': d.requires or []} for d in m.distributions()]))\n"
)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    license: str
    summary: str
    requires: tuple[str, ...]


def image_packages(engine: Engine, image: str, *, timeout_s: float = 120.0) -> list[Package]:
    if not engine.can_run:
        raise EngineError(
            f"{engine.kind} cannot run the image to list its packages", hint="use podman or docker"
        )
    argv = [
        engine.executable, "run", "--rm", "--network", "none", *HARDENED_RUN_FLAGS,
        "--user", "10001:10001", "--entrypoint", "python", image, "-c", _LIST_DISTRIBUTIONS,
    ]  # fmt: skip
    result = engine.runner.run(argv, timeout=timeout_s, env=engine.env())
    if not result.ok:
        raise EngineError(f"cannot list the Python packages of {image}:\n  {result.tail(8)}")
    try:
        rows: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EngineError(f"unexpected package list from {image}: {result.stdout[-500:]!r}") from None
    unique = {row["name"].lower(): row for row in rows if row.get("name")}
    return [
        Package(r["name"], r["version"], r["license"], r["summary"], tuple(r["requires"]))
        for _key, r in sorted(unique.items())
    ]


def render_sbom(image: str, packages: Sequence[Package], *, image_version: str = "") -> str:
    """CycloneDX JSON: the image as the described component, each package a library with its purl."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    bom = Bom()
    root = Component(name=image, version=image_version or None, type=ComponentType.CONTAINER, bom_ref=image)
    bom.metadata.component = root
    components: dict[str, Component] = {}
    for package in packages:
        key = canonicalize_name(package.name)
        purl = PackageURL(type="pypi", name=key, version=package.version)
        component = Component(
            name=package.name,
            version=package.version,
            type=ComponentType.LIBRARY,
            purl=purl,
            bom_ref=purl.to_string(),
            description=package.summary or None,
        )
        if package.license and len(package.license) < 200 and "\n" not in package.license:
            component.licenses.add(LicenseExpression(package.license))
        components[key] = component
        bom.components.add(component)
    bom.register_dependency(root, list(components.values()))
    for package in packages:
        depends = set()
        for text in package.requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and "extra" in str(requirement.marker):
                continue  # optional extras: present only if installed, and then listed on their own
            name = canonicalize_name(requirement.name)
            if name in components:
                depends.add(components[name])
        bom.register_dependency(components[canonicalize_name(package.name)], sorted(depends, key=str))
    rendered: str = JsonV1Dot6(bom).output_as_string(indent=2)
    return rendered + "\n"
