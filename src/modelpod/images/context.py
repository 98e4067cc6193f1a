"""Render the build context of a spec under `<spec dir>/.modelpod/build/`.

    .modelpod/build/
      Dockerfile, .dockerignore, requirements.lock
      dist/modelpod-<version>-py3-none-any.whl    modelpod itself, built from the installed source tree
      weights/<model path>                         the model, at its path relative to the spec
      code/...                                     the rest of the spec directory (custom classes, scripts)
      spec/modelpod.yaml, spec/<example files>     what the server reads at start
      wheelhouse/*.whl, ca-bundle.pem              only with --wheelhouse / --ca-bundle

Files are hard-linked where possible (model weights can be gigabytes) and rewritten only when they
change, so a rebuild sends the engine nothing new for unchanged layers. Symlinks that leave the spec
directory are refused or, with `keep_symlinks`, kept as links (`links.py`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from modelpod import __version__
from modelpod.images import llama_cpp
from modelpod.images.dockerfile import PRECOMPILED_FORMATS, DockerfileInputs, render_dockerfile
from modelpod.images.errors import BuildContextError
from modelpod.images.links import Link, sort_links
from modelpod.images.lock import FORMAT_EXTRAS, Lock, lock_requirements, model_requirements, render_lock
from modelpod.specfile.load import load_spec, read_spec, spec_digest
from modelpod.specfile.resolved import Spec

CONTEXT_DIR = Path(".modelpod") / "build"
DOCKERIGNORE = "# rendered by modelpod: the Dockerfile copies only what it names\n**/__pycache__\n**/*.pyc\n"
_SKIPPED_NAMES = {"__pycache__", ".modelpod"}


@dataclass(frozen=True)
class ContextOptions:
    buildkit: bool = True
    wheelhouse: Path | None = None
    ca_bundle: Path | None = None
    build_args: tuple[str, ...] = ()  # names of --build-arg values, declared as ARG for pip
    bytecode: bool | None = None  # precompile .pyc; None: for the large frameworks only
    modelpod_wheel: Path | None = None  # a prebuilt wheel of modelpod; default: built from the source tree
    wheel_timeout_s: float = 300.0
    download_timeout_s: float = 300.0  # llama.cpp's source archive, when the cache lacks it
    keep_symlinks: bool = False  # keep symlinks that leave the spec directory as links, not refuse them
    base: str | None = None  # what FROM names, the base pinned at build time (base.py); default image.base
    base_digest: str | None = None  # the pinned base's digest, for the org.opencontainers label


@dataclass(frozen=True)
class BuildContext:
    directory: Path
    dockerfile: Path
    inputs: DockerfileInputs
    lock: Lock
    notes: tuple[str, ...] = field(default=())  # what the user should know (unpinned requirements ...)


@dataclass(frozen=True)
class Sources:
    """The spec directory's files the context takes: weights/, code/ and spec/, symlinks sorted out."""

    files: dict[str, Path | Link]
    has_code: bool
    notes: tuple[str, ...]


def context_dir(spec: Spec) -> Path:
    return spec.root / CONTEXT_DIR


def gather_sources(spec: Spec, options: ContextOptions) -> Sources:
    """What the context takes from the spec directory; refuses symlinks that lead out of it (links.py)
    unless `options.keep_symlinks`. Cheap, so a build runs it before it asks the engine anything."""
    code = code_files(spec)
    tree, notes = sort_links(
        {**_prefixed("weights", model_files(spec)), **_prefixed("code", code)},
        spec.root,
        keep=options.keep_symlinks,
    )
    return Sources({**tree, **_prefixed("spec", spec_files(spec))}, bool(code), notes)


def render_context(
    spec: Spec, options: ContextOptions = ContextOptions(), sources: Sources | None = None
) -> BuildContext:
    """Write the build context for `spec` (from `sources`, gathered here when not given)."""
    if spec.engine == "vllm":
        # an image without the engine would build and then fail to start: refuse before building
        raise BuildContextError(
            f"{spec.name} is served by the vllm engine, and modelpod cannot build images for it yet",
            hint="serve it with `modelpod serve` where vLLM is installed (docs/engines.md), or set "
            "generation.engine: builtin to build an image of the built-in engine",
        )
    sources = sources or gather_sources(spec, options)
    directory = context_dir(spec)
    directory.mkdir(parents=True, exist_ok=True)
    lock = lock_requirements(
        FORMAT_EXTRAS.get(spec.model.format, ()),
        (*spec.python.requirements, *model_requirements(spec.model.format, spec.model.path)),
    )
    files: dict[str, bytes | Path | Link] = dict(sources.files)
    wheel = options.modelpod_wheel or modelpod_wheel(options.wheel_timeout_s)
    if wheel is not None:
        files[f"dist/{wheel.name}"] = wheel
    if options.wheelhouse is not None:
        files.update(_prefixed("wheelhouse", _wheelhouse_files(options.wheelhouse)))
    if options.ca_bundle is not None:
        files["ca-bundle.pem"] = _ca_bundle(options.ca_bundle)
    if spec.engine == "llamacpp":
        files.update(llama_cpp.context_files(options.download_timeout_s))
    inputs = dockerfile_inputs(spec, options, wheel=wheel.name if wheel else None, has_code=sources.has_code)
    files["Dockerfile"] = render_dockerfile(inputs).encode()
    files[".dockerignore"] = DOCKERIGNORE.encode()
    files["requirements.lock"] = render_lock(lock, spec_name=spec.name, fmt=spec.model.format).encode()
    sync_tree(directory, files)
    if wheel is not None and options.modelpod_wheel is None:
        shutil.rmtree(wheel.parent, ignore_errors=True)
    return BuildContext(
        directory, directory / "Dockerfile", inputs, lock, sources.notes + _notes(lock, options)
    )


def dockerfile_inputs(
    spec: Spec, options: ContextOptions, *, wheel: str | None, has_code: bool
) -> DockerfileInputs:
    labels = [
        ("org.opencontainers.image.title", spec.name),
        ("org.opencontainers.image.description", spec.description or f"{spec.name} model served by modelpod"),
        ("org.opencontainers.image.base.name", spec.image.base),
        ("org.opencontainers.image.base.digest", options.base_digest or ""),
        ("modelpod.version", __version__),
        ("modelpod.model.format", spec.model.format),
        ("modelpod.specfile.profile", spec.profile or ""),
        ("modelpod.specfile.spec_digest", spec_digest(spec)),
    ]
    labels = [(key, value) for key, value in labels if value]
    return DockerfileInputs(
        name=spec.name,
        base=options.base or spec.image.base,
        port=spec.server.port,
        fmt=spec.model.format,
        spec_file=spec.source.name,
        profile=spec.profile,
        buildkit=options.buildkit,
        system_packages=_system_packages(spec),
        wheel=wheel,
        wheelhouse=options.wheelhouse is not None,
        ca_bundle=options.ca_bundle is not None,
        build_args=tuple(sorted(set(options.build_args))),
        bytecode=spec.model.format in PRECOMPILED_FORMATS if options.bytecode is None else options.bytecode,
        weights=spec.model.path is not None,
        code=has_code,
        llama_cpp=spec.engine == "llamacpp",
        labels=tuple(labels),
    )


def _system_packages(spec: Spec) -> tuple[str, ...]:
    if spec.engine != "llamacpp":
        return spec.python.system_packages
    extra = [p for p in llama_cpp.RUNTIME_PACKAGES if p not in spec.python.system_packages]
    return (*spec.python.system_packages, *extra)


def model_files(spec: Spec) -> dict[str, Path]:
    """The model file, or every file of a model directory, by path relative to the spec directory. A
    directory leaves out another profile's model inside it (minilm's `model/optimized` is no part of the
    transformers image)."""
    path = spec.model.path
    if path is None:
        return {}
    if not path.is_relative_to(spec.root):
        raise BuildContextError(
            f"the model {path} lies outside the spec directory {spec.root}",
            hint="move or copy the model into the spec directory: the image keeps the spec's layout",
        )
    if path.is_file():
        return {path.relative_to(spec.root).as_posix(): path}
    nested = [other for other in _all_model_paths(spec) if other != path and other.is_relative_to(path)]
    return {
        f.relative_to(spec.root).as_posix(): f
        for f in _walk(path, hidden=True)
        if not any(f.is_relative_to(other) for other in nested)
    }


def spec_files(spec: Spec) -> dict[str, Path]:
    """The spec file and the example files it (or any profile) names."""
    files = {spec.source.name: spec.source}
    for name in _example_files(spec.source):
        path = (spec.root / name).resolve()
        if path.is_file() and path.is_relative_to(spec.root):
            files[path.relative_to(spec.root).as_posix()] = path
    return files


def code_files(spec: Spec) -> dict[str, Path]:
    """Everything else in the spec directory: custom classes, helper modules, scripts, small data.

    Left out: hidden files, caches, .modelpod/, the spec and its examples, and the model path of every
    profile (a .keras file has no place in the ONNX profile's image)."""
    taken = {spec.root / p for p in spec_files(spec)}
    models = _all_model_paths(spec)
    files = {}
    for path in _walk(spec.root, hidden=False):
        if path in taken or any(path == m or path.is_relative_to(m) for m in models):
            continue
        files[path.relative_to(spec.root).as_posix()] = path
    return files


def _all_model_paths(spec: Spec) -> set[Path]:
    paths = {spec.model.path} if spec.model.path else set()
    for profile in spec.profiles:
        other = load_spec(spec.source, profile, require_model=False).model.path
        if other is not None:
            paths.add(other)
    return paths


def _example_files(source: Path) -> set[str]:
    data, _lines = read_spec(source)
    sections = [data, *(data.get("profiles") or {}).values()]
    names = set()
    for section in sections:
        for example in (section or {}).get("examples") or []:
            if isinstance(example, dict) and isinstance(example.get("file"), str):
                names.add(example["file"])
    return names


def _walk(root: Path, *, hidden: bool) -> Iterator[Path]:
    """Files under `root`, symlinks to files among them, and symlinks to directories that lead out of
    `root` (for links.py to refuse or keep); a linked directory inside repeats files already walked."""
    for current, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_NAMES and (hidden or not d.startswith(".")))
        for name in [d for d in dirs if (Path(current) / d).is_symlink()]:
            dirs.remove(name)  # os.walk does not follow it either way
            if not (Path(current) / name).resolve().is_relative_to(root):
                yield Path(current) / name
        for name in sorted(names):
            if (hidden or not name.startswith(".")) and not name.endswith(".pyc"):
                yield Path(current) / name


def _prefixed(prefix: str, files: Mapping[str, Path]) -> dict[str, Path]:
    return {f"{prefix}/{rel}": path for rel, path in files.items()}


def _wheelhouse_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        raise BuildContextError(f"--wheelhouse {directory} is not a directory", hint="a folder of .whl files")
    return {
        p.name: p for p in sorted(directory.iterdir()) if p.suffix == ".whl" or p.name.endswith(".tar.gz")
    }


def _ca_bundle(path: Path) -> bytes:
    """The extra CA certificates followed by the public roots pip trusts anyway (certifi), if available."""
    try:
        extra = path.read_bytes()
    except OSError as exc:
        raise BuildContextError(
            f"cannot read --ca-bundle {path}: {exc.strerror}", hint="a PEM file"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in extra:
        raise BuildContextError(f"--ca-bundle {path} holds no PEM certificate", hint="a PEM file")
    try:
        import certifi

        return extra.rstrip(b"\n") + b"\n" + Path(certifi.where()).read_bytes()
    except ImportError:
        return extra


def modelpod_wheel(timeout_s: float, source: Path | None = None) -> Path | None:
    """A wheel of modelpod built from `source`, by default the source tree it is installed from; None for
    a released install."""
    source = source or installed_source()
    if source is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="modelpod-wheel-"))
    argv = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        str(out),
        str(source),
    ]
    if importlib.util.find_spec("hatchling") is not None:  # the backend is here: no need to fetch it
        argv.insert(4, "--no-build-isolation")
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BuildContextError(f"building modelpod's wheel took over {timeout_s:.0f}s") from None
    wheels = sorted(out.glob("modelpod-*.whl"))
    if result.returncode != 0 or not wheels:
        raise BuildContextError(
            f"cannot build modelpod's wheel from {source}:\n{result.stderr[-2000:]}",
            hint="pip wheel needs hatchling (or network access to fetch it)",
        )
    return wheels[0]


def installed_source() -> Path | None:
    """The source tree modelpod is installed from (an editable or local-directory install), if any."""
    try:
        text = metadata.distribution("modelpod").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    info = json.loads(text)
    url = info.get("url", "")
    if "dir_info" not in info or not url.startswith("file://"):
        return None
    source = Path(url.removeprefix("file://"))
    return source if (source / "pyproject.toml").is_file() else None


def sync_tree(directory: Path, files: Mapping[str, bytes | Path | Link]) -> None:
    """Make `directory` hold exactly `files`, touching only what changed."""
    for rel, content in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            if not target.is_symlink() or str(target.readlink()) != content.target:
                _remove(target)
                target.symlink_to(content.target)
        elif isinstance(content, bytes):
            if target.is_symlink() or not target.is_file() or target.read_bytes() != content:
                _remove(target)
                target.write_bytes(content)
        elif not _same_file(content, target):
            _link_or_copy(content, target)
    wanted = {directory / rel for rel in files}
    for current, dirs, names in os.walk(directory, topdown=False):
        for name in [*names, *(d for d in dirs if (Path(current) / d).is_symlink())]:
            if Path(current) / name not in wanted:
                (Path(current) / name).unlink()
        if current != str(directory) and not any(Path(current).iterdir()):
            Path(current).rmdir()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _same_file(source: Path, target: Path) -> bool:
    if target.is_symlink() or not target.is_file():
        return False
    a, b = source.stat(), target.stat()
    return (a.st_ino == b.st_ino and a.st_dev == b.st_dev) or (
        a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link when the file is world-readable (the image's user 10001 reads it), else copy and chmod."""
    _remove(target)
    if source.stat().st_mode & stat.S_IROTH:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)
    target.chmod(0o644)


def _notes(lock: Lock, options: ContextOptions) -> tuple[str, ...]:
    notes = [f"not pinned, pip resolves it inside the build: {n}" for n in lock.notes]
    wheelhouse = {p.name.lower() for p in options.wheelhouse.iterdir()} if options.wheelhouse else set()
    for pin in lock.pins:
        stem = f"{pin.name.replace('-', '_')}-{pin.version}-".lower()
        if pin.has_local_label and not any(name.startswith(stem) for name in wheelhouse):
            notes.append(
                f"{pin.line} is a local build that package indexes may not have: "
                "pass --wheelhouse DIR holding its wheel"
            )
    return tuple(notes)
