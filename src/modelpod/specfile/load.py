"""parse -> validate -> resolve for modelpod.yaml.

- parse: YAML text to a plain mapping (YAML errors carry their line).
- validate: the mapping against `SpecFile`, once for the base and once per selected profile merged onto it.
- resolve: a frozen, complete `Spec`: paths absolute, format detected, examples read, image name filled.

Every problem becomes a `SpecIssue` naming the field path, the bad value, the YAML line and a hint;
all problems found are raised together in one `SpecError`. The file is read within the limits of
`specfile/_yaml.py` (size, nesting, aliases, duplicate keys), and every path it names must stay inside its
directory once symlinks are followed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelpod.errors import InputError, SpecError, SpecIssue
from modelpod.signature import suggest
from modelpod.specfile._issues import Loc, format_path, validation_issues, yaml_issue
from modelpod.specfile._paths import inside, read_example
from modelpod.specfile._yaml import MAX_SPEC_BYTES, Refused, decode_spec, parse_yaml, read_limited
from modelpod.specfile.footprint import read_footprint, read_gguf_footprint
from modelpod.specfile.formats import detect_format
from modelpod.specfile.model import FORMATS, SpecFile, default_body_limit
from modelpod.specfile.patterns import quantity_bytes
from modelpod.specfile.resolved import Example, ResolvedImage, ResolvedModel, Spec

SPEC_FILENAMES = ("modelpod.yaml", "modelpod.yml")

# Defaults that the well-known profiles bring; the file's own settings override them.
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "dev": {"scaling": {"replicas": 1, "min_replicas": 1, "max_replicas": 1}},
    "staging": {"scaling": {"replicas": 2, "min_replicas": 2, "max_replicas": 4}},
    "prod": {"scaling": {"replicas": 3, "min_replicas": 3, "max_replicas": 10}},
}


def find_spec_file(path: str | Path = ".") -> Path:
    """The spec file itself when `path` is a file, else modelpod.yaml inside the directory `path`."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in SPEC_FILENAMES:
            if (path / name).is_file():
                return path / name
        raise SpecError(
            [
                SpecIssue(
                    "",
                    f"no modelpod.yaml in {path.resolve()}",
                    hint="write one with `modelpod init <model file>`",
                )
            ]
        )
    raise SpecError(
        [SpecIssue("", f"{path} does not exist", hint="pass a modelpod.yaml or the directory holding it")]
    )


# `modelpod init` writes this in a comment beside what it could not read from the model (a signature)
# and wrote a placeholder for; a spec holding it is refused until the real values replace it.
PLACEHOLDER_MARK = "PLACEHOLDER (modelpod init)"


def load_spec(path: str | Path = ".", profile: str | None = None, *, require_model: bool = True) -> Spec:
    """Read, validate and resolve a spec.

    **Parameters**

    * **path** `str | Path` - *(optional)* a `modelpod.yaml`, or the directory holding one (default: the
      current directory).
    * **profile** `str` - *(optional)* a profile to apply: `dev`, `staging`, `prod` or one the spec
      defines; its keys are merged onto the file's.
    * **require_model** `bool` - *(optional)* `False` skips the check that the model file exists (for
      rendering manifests on a machine without the weights).

    Returns a frozen `Spec`. Raises `SpecError` listing every problem found, each with its field, line
    and a hint.
    """
    source = find_spec_file(path)
    raw, lines = read_spec(source)
    base = _validate(raw, lines, str(source))
    merged = _apply_profile(raw, base, profile, lines, str(source))
    profiles = tuple(sorted({*base.profiles, *BUILTIN_PROFILES}))
    overlay = base.profiles.get(profile, {}) if profile else {}
    return _resolve(merged, source, profile, profiles, require_model, _Locator(lines, profile, overlay))


def profile_names(path: str | Path = ".") -> list[str]:
    """The profiles a spec defines, for tools that check every one of them."""
    source = find_spec_file(path)
    raw, lines = read_spec(source)
    return sorted(_validate(raw, lines, str(source)).profiles)


def read_spec(source: Path) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The spec file's top-level mapping and the line of every field path, read within the limits of
    `specfile/_yaml.py`; anything else is a SpecError."""
    try:
        data = read_limited(source, MAX_SPEC_BYTES)
    except OSError as exc:
        issue = SpecIssue("", f"cannot read the file: {exc.strerror}", hint="check its permissions")
        raise SpecError([issue], source=str(source)) from None
    if data is None:
        issue = SpecIssue(
            "",
            f"the file is larger than {MAX_SPEC_BYTES // 1024} KiB, the limit of a spec",
            hint="a spec is a few kilobytes: move large example inputs to example files (examples[].file)",
        )
        raise SpecError([issue], source=str(source))
    try:
        text = decode_spec(data)
        raw, lines = parse_yaml(text)
    except Refused as exc:
        raise SpecError([exc.issue], source=str(source)) from None
    except yaml.YAMLError as exc:
        raise SpecError([yaml_issue(exc, text)], source=str(source)) from None
    placeholders = _placeholders(text)
    if placeholders:
        raise SpecError(placeholders, source=str(source))
    return _top_level(raw, str(source)), lines


def _placeholders(text: str) -> list[SpecIssue]:
    """One issue for each placeholder `modelpod init` wrote and nobody replaced yet."""
    return [
        SpecIssue(
            "model.signature",
            "a placeholder written by `modelpod init`, which could not read the model's inputs and outputs",
            hint="declare each input and output (name, dtype, shape per item) as the model takes them, "
            f"then delete the comment marked {PLACEHOLDER_MARK}",
            line=number,
        )
        for number, line in enumerate(text.splitlines(), 1)
        if PLACEHOLDER_MARK in line
    ]


def _top_level(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        raise SpecError(
            [SpecIssue("", "the file is empty", hint="start from `modelpod init <model file>`")],
            source=source,
        )
    if not isinstance(data, dict):
        raise SpecError(
            [
                SpecIssue(
                    "", f"expected a mapping of keys at the top level, got a {type(data).__name__}", line=1
                )
            ],
            source=source,
        )
    return data


def _validate(raw: dict[str, Any], lines: dict[Loc, int], source: str) -> SpecFile:
    try:
        return SpecFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_issues(exc, SpecFile, lines), source=source) from None


def _apply_profile(
    raw: dict[str, Any], base: SpecFile, profile: str | None, lines: dict[Loc, int], source: str
) -> SpecFile:
    if profile is None:
        return base
    known = sorted({*base.profiles, *BUILTIN_PROFILES})
    if profile not in known:
        close = suggest(profile, known)
        hint = f"did you mean {close!r}? " if close else ""
        raise SpecError(
            [
                SpecIssue(
                    "profiles",
                    f"unknown profile {profile!r}",
                    hint=f"{hint}known profiles: {', '.join(known)}; define it under `profiles:`",
                    line=lines.get(("profiles",)),
                )
            ],
            source=source,
        )
    overlay = base.profiles.get(profile, {})
    forbidden = [key for key in ("profiles", "name", "version") if key in overlay]
    if forbidden:
        loc = ("profiles", profile, forbidden[0])
        raise SpecError(
            [SpecIssue(format_path(loc), "a profile cannot change this key", line=lines.get(loc))],
            source=source,
        )
    file_data = {k: v for k, v in raw.items() if k != "profiles"}
    merged = deep_merge(deep_merge(BUILTIN_PROFILES.get(profile, {}), file_data), overlay)
    try:
        return SpecFile.model_validate(merged)
    except ValidationError as exc:
        issues = []
        for issue in validation_issues(exc, SpecFile, {}):
            if _path_in(overlay, issue.path):
                loc_path = f"profiles.{profile}.{issue.path}"
                line = _line_for(lines, ("profiles", profile), issue.path)
                issues.append(SpecIssue(loc_path, issue.message, issue.value, issue.hint, line))
            else:
                line = _line_for(lines, (), issue.path)
                message = f"{issue.message} (with profile {profile!r})"
                issues.append(SpecIssue(issue.path, message, issue.value, issue.hint, line))
        raise SpecError(issues, source=source) from None


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` merged onto `base`: mappings merge key by key, anything else replaces; null removes a key."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _path_in(data: dict[str, Any], dotted: str) -> bool:
    first = dotted.split(".")[0].split("[")[0]
    return first in data and (
        not isinstance(data[first], dict)
        or "." not in dotted
        or _path_in(data[first], dotted.split(".", 1)[1])
    )


def _line_for(lines: dict[Loc, int], prefix: Loc, dotted: str) -> int | None:
    loc: Loc = prefix
    best = lines.get(prefix)
    for part in dotted.replace("[", ".[").split("."):
        if not part:
            continue
        loc = (*loc, int(part[1:-1]) if part.startswith("[") else part)
        best = lines.get(loc, best)
    return best


def _resolve(
    file: SpecFile,
    source: Path,
    profile: str | None,
    profiles: tuple[str, ...],
    require_model: bool,
    locate: _Locator,
) -> Spec:
    root = source.parent.resolve()
    issues: list[SpecIssue] = []
    model = _resolve_model(file, root, require_model, issues)
    engine = _resolve_engine(file, model, issues)
    examples = _resolve_examples(file, root, model, issues)
    inside(root, file.train.output_dir, "train.output_dir", issues)
    _check_storage(file, issues)
    if issues:
        raise SpecError([locate(issue) for issue in issues], source=str(source))
    return Spec(
        name=file.name,
        description=file.description,
        model=model,
        python=file.python,
        server=file.server,
        generation=file.generation,
        engine=engine,
        resources=file.resources,
        scaling=file.scaling,
        image=ResolvedImage(repository=file.image.repository or file.name, base=file.image.base),
        kubernetes=file.kubernetes,
        train=file.train,
        examples=examples,
        profile=profile,
        profiles=profiles,
        root=root,
        source=source.resolve(),
    )


def _resolve_engine(file: SpecFile, model: ResolvedModel, issues: list[SpecIssue]) -> str | None:
    """The engine that generates a language model's text (docs/engines.md), or None for any other model:
    `generation.engine`, or for `auto`, llamacpp for a GGUF file, vllm when the spec asks for GPUs, the
    built-in engine otherwise."""
    chosen = file.generation.engine
    if model.format == "gguf":
        if chosen in ("builtin", "vllm"):
            issues.append(
                SpecIssue(
                    "generation.engine",
                    f"the {chosen} engine serves a transformers directory, not a GGUF file",
                    value=chosen,
                    hint="use engine llamacpp (or auto) for a GGUF file, or point model.path at a "
                    "transformers directory",
                )
            )
        return "llamacpp"
    language_model = model.footprint is not None or model.options.get("task") == "text-generation"
    if not language_model:
        if chosen in ("llamacpp", "vllm"):
            issues.append(
                SpecIssue(
                    "generation.engine",
                    f"the {chosen} engine serves language models; a {model.format} model is served by "
                    "modelpod itself",
                    value=chosen,
                    hint="remove generation.engine",
                )
            )
        return None
    if chosen == "llamacpp":
        issues.append(
            SpecIssue(
                "generation.engine",
                "llama.cpp serves GGUF files, and model.path is a transformers directory",
                value=chosen,
                hint="convert it with llama.cpp's convert_hf_to_gguf.py and point model.path at the .gguf "
                "file, or use engine builtin or vllm",
            )
        )
    if chosen == "auto":
        return "vllm" if file.resources.gpu > 0 else "builtin"
    return chosen


def _check_storage(file: SpecFile, issues: list[SpecIssue]) -> None:
    """The /tmp volume counts against a pod's ephemeral storage: a limit below it would evict the pod
    before /tmp is full."""
    tmp = quantity_bytes(file.kubernetes.tmp_size)
    for field, resources in (("resources", file.resources), ("train.resources", file.train.resources)):
        if resources is not None and quantity_bytes(resources.ephemeral_storage) < tmp:
            issues.append(
                SpecIssue(
                    f"{field}.ephemeral_storage",
                    f"{resources.ephemeral_storage} is less than the /tmp volume "
                    f"(kubernetes.tmp_size: {file.kubernetes.tmp_size})",
                    hint="raise ephemeral_storage above tmp_size, with room for the logs, or lower tmp_size",
                )
            )


class _Locator:
    """Where an issue found while resolving lies: in the selected profile when that profile sets the
    field (then the path names the profile, as validation issues do), else in the base."""

    def __init__(self, lines: dict[Loc, int], profile: str | None, overlay: dict[str, Any]) -> None:
        self.lines, self.profile, self.overlay = lines, profile, overlay

    def __call__(self, issue: SpecIssue) -> SpecIssue:
        if issue.line is not None:
            return issue
        if self.profile and _path_in(self.overlay, issue.path):
            line = _line_for(self.lines, ("profiles", self.profile), issue.path)
            path = f"profiles.{self.profile}.{issue.path}"
            return SpecIssue(path, issue.message, issue.value, issue.hint, line)
        return SpecIssue(
            issue.path, issue.message, issue.value, issue.hint, _line_for(self.lines, (), issue.path)
        )


def _resolve_model(file: SpecFile, root: Path, require_model: bool, issues: list[SpecIssue]) -> ResolvedModel:
    section = file.model
    path = inside(root, section.path, "model.path", issues) if section.path else None
    if section.path and path is None:
        return ResolvedModel(
            path=path,
            format=section.format or "custom",
            class_name=section.class_,
            signature=section.signature,
            options=section.options,
            code_dir=root,
        )  # nothing more to say about a file modelpod will not read
    fmt = section.format
    if section.class_ is not None:
        if fmt not in (None, "custom"):
            issues.append(
                SpecIssue(
                    "model.class",
                    f"a custom class cannot be combined with format {fmt!r}",
                    hint="remove model.format, or remove model.class to use the built-in runtime",
                )
            )
        fmt = "custom"
    elif fmt == "custom":
        issues.append(
            SpecIssue(
                "model.class", "format custom needs a class", hint='set model.class: "my_module:MyModel"'
            )
        )
    if path is None and fmt != "custom":
        issues.append(
            SpecIssue(
                "model.path",
                "required field is missing",
                hint="the model file or directory, relative to modelpod.yaml",
            )
        )
    elif path is not None and require_model and not path.exists():
        issues.append(
            SpecIssue(
                "model.path",
                f"model file not found at {path}",
                value=section.path,
                hint="train or export the model first, or fix the path (it is relative to modelpod.yaml)",
            )
        )
    if fmt is None and path is not None:
        fmt = detect_format(path)  # type: ignore[assignment]
        if fmt is None and (path.exists() or not require_model):
            issues.append(
                SpecIssue(
                    "model.format",
                    f"cannot tell the format of {path.name}",
                    hint=f"set model.format to one of {', '.join(FORMATS)}",
                )
            )
    if section.class_ is not None and section.signature is None:
        issues.append(
            SpecIssue(
                "model.signature", "a custom class needs a signature", hint="declare its inputs and outputs"
            )
        )
    footprint = None
    if fmt == "transformers" and path is not None and path.is_dir():
        dtype, device = section.options.get("dtype"), str(section.options.get("device", "cpu"))
        footprint = read_footprint(path, dtype=str(dtype) if dtype else None, device=device)
    elif fmt == "gguf" and path is not None and path.is_file():
        footprint = read_gguf_footprint(path)
    return ResolvedModel(
        path=path,
        format=fmt or "custom",
        class_name=section.class_,
        signature=section.signature,
        options=section.options,
        code_dir=root,
        footprint=footprint,
    )


def _resolve_examples(
    file: SpecFile, root: Path, model: ResolvedModel, issues: list[SpecIssue]
) -> tuple[Example, ...]:
    examples = []
    for i, section in enumerate(file.examples):
        inputs, expected = section.inputs, section.expected
        if section.file is not None:
            field = f"examples[{i}].file"
            path = inside(root, section.file, field, issues)
            if path is None:
                continue
            try:
                limit = file.server.max_body_bytes or default_body_limit(file.resources.memory)
                data = read_example(path, int(limit))
                inputs, expected = data["inputs"], data.get("expected")
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                issues.append(
                    SpecIssue(
                        field,
                        f"cannot read the example: {reason}",
                        value=section.file,
                        hint='a JSON object {"inputs": {...}, "expected": {...}}; '
                        "example files are written by training scripts",
                    )
                )
                continue
        if section.chat is not None:
            inputs = {}
        if inputs is None:  # ExampleSection guarantees inputs, file or chat; for type checkers
            continue
        if model.signature is not None and section.chat is None:
            try:
                model.signature.coerce_inputs(inputs, batched=False)
            except InputError as exc:
                issues.append(
                    SpecIssue(f"examples[{i}].inputs", str(exc), hint="match model.signature.inputs")
                )
        examples.append(
            Example(
                name=section.name,
                inputs=inputs,
                expected=expected,
                chat=section.chat,
                contains=section.contains,
                atol=section.atol,
                rtol=section.rtol,
            )
        )
    return tuple(examples)


def spec_digest(spec: Spec) -> str:
    """sha256 of the resolved spec's content (paths relative to its directory), for image labels."""
    data = spec.model_dump(mode="json", exclude={"root", "source"})
    if spec.model.path is not None:
        data["model"]["path"] = (
            spec.model.path.relative_to(spec.root).as_posix()
            if spec.model.path.is_relative_to(spec.root)
            else str(spec.model.path)
        )
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
