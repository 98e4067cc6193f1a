"""Patterns of the spec's values that reach a Dockerfile, a shell or pip line, or a manifest.

Each is strict, so that no spec can add an instruction, an option or a shell command (a newline, a
space, a leading dash, `;`, `$`). pydantic checks them with its Rust regex engine, where `$` is the end
of the text (never before a final newline); check them in Python with `re.fullmatch`.
`PATTERN_HINTS` says in words what each takes, for the issue a mismatch becomes.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import StringConstraints

_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_IMAGE_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# an image reference as docker parses it: [host[:port]/]path[:tag][@sha256:digest]
IMAGE_REF_PATTERN = (
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_IMAGE_PATH_PART}(?:/{_IMAGE_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
# a Debian package, optionally with an architecture and a version: libgomp1, curl=7.88.1-10+deb12u5
DEB_PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?$"
# a PEP 508 requirement on one line: name[extras] (versions | @ url) ; marker -- never a pip option
_REQ_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQ_VERSION = r"(?:~=|===|==|!=|<=|>=|<|>)[ \t]*[A-Za-z0-9_.*+!-]+"
_REQ_VERSIONS = rf"{_REQ_VERSION}(?:[ \t]*,[ \t]*{_REQ_VERSION})*"
REQUIREMENT_PATTERN = (
    rf"^{_REQ_NAME}[ \t]*(?:\[[ \t]*{_REQ_NAME}(?:[ \t]*,[ \t]*{_REQ_NAME})*[ \t]*\])?[ \t]*"
    rf"(?:\([ \t]*{_REQ_VERSIONS}[ \t]*\)|{_REQ_VERSIONS}|@[ \t]*[A-Za-z][A-Za-z0-9+.-]*://[^\s;]+)?"
    r"""[ \t]*(?:;[ \t]*[A-Za-z0-9_.<>=!~'"() \t,-]+)?$"""
)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_VALUE_PATTERN = r"^[^\x00]*$"  # a process environment cannot hold a NUL
URL_PATTERN = r"^https?://[^\s]+$"
# Kubernetes names, label keys and values
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS_SUBDOMAIN_PATTERN = rf"^{_DNS_SUBDOMAIN}$"
LABEL_KEY_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
# Kubernetes object names: a DNS-1123 label, short enough to leave room for suffixes such as "-abc12".
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
CLASS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
# one command-line argument of an engine (no shell reads it: only control characters are refused)
ENGINE_ARG_PATTERN = r"^[^\x00-\x1f\x7f]+$"

# what each pattern takes, in words (specfile/_issues.py adds it to the issue as the hint)
PATTERN_HINTS: dict[str, str] = {
    IMAGE_REF_PATTERN: "an image reference such as python:3.11-slim or registry:5000/team/base@sha256:...",
    DEB_PACKAGE_PATTERN: "a Debian package name such as libgomp1, optionally name=version; one per entry",
    REQUIREMENT_PATTERN: 'one requirement in pip\'s syntax, e.g. "scikit-learn>=1.3"; pip options '
    "(--index-url ...) go in pip's configuration or --build-arg PIP_INDEX_URL=...",
    ENV_NAME_PATTERN: "letters, digits and underscores, not starting with a digit",
    ENV_VALUE_PATTERN: "a value without NUL characters",
    URL_PATTERN: "an http(s) URL without spaces",
    DNS_SUBDOMAIN_PATTERN: "lowercase letters, digits, '-' and '.', as Kubernetes names objects",
    LABEL_KEY_PATTERN: "a Kubernetes label key: [prefix/]name of letters, digits, '-', '_' and '.'",
    LABEL_VALUE_PATTERN: "a Kubernetes label value: up to 63 letters, digits, '-', '_' and '.'",
    DURATION_PATTERN: "a whole number with ms, s, m or h, e.g. 30s or 5m",
    NAME_PATTERN: "lowercase letters, digits and '-', starting and ending with a letter or digit, "
    "e.g. digits-v2",
    CPU_PATTERN: 'CPU cores as a number or in millicores, e.g. "2", "0.5" or "500m"',
    MEMORY_PATTERN: "bytes as a Kubernetes quantity: a number with Ki, Mi, Gi, Ti (powers of 1024) or "
    "k, M, G, T (powers of 1000), e.g. 512Mi or 1Gi (not 1GB)",
    CLASS_PATTERN: 'a Python class as "module:Class", e.g. my_model:Model',
    ENGINE_ARG_PATTERN: 'one command-line argument, without control characters, e.g. "--threads" then "4"',
}

ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_REF_PATTERN, max_length=512)]
DebPackage = Annotated[str, StringConstraints(pattern=DEB_PACKAGE_PATTERN)]
Requirement = Annotated[str, StringConstraints(pattern=REQUIREMENT_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
EnvValue = Annotated[str, StringConstraints(pattern=ENV_VALUE_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
EngineArg = Annotated[str, StringConstraints(pattern=ENGINE_ARG_PATTERN, max_length=4096)]

_QUANTITY_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory or storage quantity such as "512Mi" or "1.5G"."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", quantity)
    if match is None or match.group(2) not in _QUANTITY_SUFFIXES:
        raise ValueError(f"{quantity!r} is not a quantity such as 512Mi or 2Gi")
    return int(Decimal(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2)])
