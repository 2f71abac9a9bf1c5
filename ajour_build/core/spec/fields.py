"""Validated scalar types for fleet specs: names, image refs, git URIs, paths, durations.

Every string field goes through :func:`text`, which keeps what the user wrote: a plain
YAML ``0.10`` stays ``"0.10"`` (YAML 1.1 would read 0.1); a real number from JSON, a
boolean or a null is refused with a hint to quote it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from ajour_build.core.spec.document import YamlFloat, YamlInt

# used with fullmatch: "$" alone would let a trailing newline through
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# dot-separated DNS labels (each part as DNS_LABEL; only the total length is limited)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
MAX_TIMEOUT_SECONDS = 48 * 3600

# distribution/reference grammar
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # ASCII: \w would take any letter
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
IMAGE_REF = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
REPOSITORY_NAME = re.compile(_NAME)
REPOSITORY_REF = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")

MAX_ARG_CHARS = 4096
RESERVED_ENV = frozenset({"DOCKER_CONFIG"})
MAX_ARGS = 256
MAX_ARGS_BYTES = 32 * 1024


def text(value: Any) -> Any:
    """Accept text; turn plain YAML numbers back into the text that was written."""
    if isinstance(value, YamlInt | YamlFloat):
        return value.raw
    if isinstance(value, bool):
        word = "true" if value else "false"
        raise ValueError(
            f"expected text, got the boolean {word} (YAML 1.1 reads yes/no/on/off as booleans);"
            " put the value in quotes"
        )
    if isinstance(value, int | float):
        raise ValueError(f"expected text, got the number {value!r}; put the value in quotes")
    if value is None:
        raise ValueError("expected text, got null; give a value or remove the key")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


Text = Annotated[str, BeforeValidator(text)]


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and DNS_LABEL.fullmatch(value) is not None


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and DNS_SUBDOMAIN.fullmatch(value) is not None


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: use at most 63 lowercase letters, digits"
            " and '-', starting and ending with a letter or digit"
        )
    return value


def _dns_subdomain(value: str) -> str:
    if not is_dns_subdomain(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 subdomain: use at most 253 lowercase letters,"
            " digits, '-' and '.', each dot-separated part starting and ending with a"
            " letter or digit"
        )
    return value


def _image_ref(value: str) -> str:
    if len(value) > 255 + 140 or not IMAGE_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid image reference; expected"
            " [registry[:port]/]repository[:tag][@sha256:digest], lowercase repository"
        )
    return value


def _looks_like_domain(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _repository_ref(value: str) -> str:
    first = value.split("/", 1)[0]
    if "/" in value and _looks_like_domain(first):
        raise ValueError(
            f"{value!r} names a registry host ({first!r}); container.image is relative to"
            " the installation's registry prefix (registry.prefix in ajour.yaml), so drop"
            " the host"
        )
    if not REPOSITORY_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid image name; expected repository[:tag][@sha256:digest]"
            " with a lowercase repository, for example my-firmware:latest"
        )
    return value


def _builder_image(value: str) -> str:
    # a builder alias (resolved through ajour.yaml's builders) or a full image reference
    return _image_ref(value)


_GIT_HINT = "use https://host/org/repo, ssh://git@host/org/repo, git@host:org/repo or file:///path"


def redact_uri(value: str) -> str:
    """``value`` with any user info (``user:password@``) replaced: safe to show or log."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", value)


def _git_uri_shape(value: str, shown: str) -> None:
    if not value:
        raise ValueError(f"the git URI is empty; {_GIT_HINT}")
    if len(value) > 2048:
        raise ValueError(f"the git URI is {len(value)} characters long; the limit is 2048")
    if value.startswith("-"):
        raise ValueError(f"{shown!r} starts with '-', which git would read as an option")
    if "::" in value.split("/", 1)[0] or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", value):
        raise ValueError(
            f"{shown!r} uses a git remote helper (<transport>::), which can run commands;"
            f" {_GIT_HINT}"
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{shown!r} contains whitespace or control characters")


def _git_uri(value: str) -> str:
    shown = redact_uri(value)
    _git_uri_shape(value, shown)
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
    if scheme_match is None:
        return _scp_like(value, _GIT_HINT)
    scheme = scheme_match.group(1).lower()
    netloc, slash, path = value[scheme_match.end() :].partition("/")
    if scheme == "file":
        if netloc not in ("", "localhost") or not slash:
            raise ValueError(f"{shown!r}: a file URI must be file:///absolute/path")
        return value
    if scheme not in ("https", "ssh"):
        raise ValueError(f"{shown!r}: the scheme {scheme!r} is not allowed; {_GIT_HINT}")
    userinfo, _, hostport = netloc.rpartition("@")
    if "@" in netloc and (scheme == "https" or ":" in userinfo):
        raise ValueError(
            f"the git URI {shown!r} embeds credentials; remove them and give credentials to"
            " the build through a secret (git credentials or an SSH key), never in the spec"
        )
    if not hostport:
        raise ValueError(f"{shown!r} has no host")
    _no_option("user", userinfo, shown)
    _no_option("host", hostport.lstrip("["), shown)
    if not _HOSTPORT.fullmatch(hostport):
        raise ValueError(
            f"{shown!r}: the host {hostport!r} is not a host name or [IPv6] address with an"
            f" optional numeric port; {_GIT_HINT}"
        )
    _no_option("repository path", path.split("?", 1)[0], shown)
    return value


_HOSTPORT = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)


def _no_option(part: str, text: str, shown: str) -> None:
    """ssh and git read an argument that starts with '-' as an option (-oProxyCommand=…)."""
    if text.startswith("-"):
        raise ValueError(
            f"{shown!r}: the {part} {text.split('/', 1)[0]!r} starts with '-', which ssh or git"
            f" would read as an option (such as -oProxyCommand); {_GIT_HINT}"
        )


def _scp_like(value: str, hint: str) -> str:
    match = re.fullmatch(
        r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>.+)", value
    )
    head, _, path = value.partition(":")
    user, _, host = head.rpartition("@")
    _no_option("user", user, value)
    _no_option("host", host, value)
    _no_option("repository path", path.lstrip("/"), value)
    if match is None or "/" in head:
        raise ValueError(f"{value!r} is not a git URI this builder accepts; {hint}")
    return value


def _relative_path(value: str, what: str) -> str:
    if not value or value in (".", "./"):
        raise ValueError(f"the {what} is empty; name a file relative to the project folder")
    _check_relative(value, what)
    return value


def _check_relative(value: str, what: str) -> None:
    if len(value) > 1024:
        raise ValueError(f"the {what} is {len(value)} characters long; the limit is 1024")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"the {what} {value!r} is absolute; make it relative to the project")
    if "\\" in value:
        raise ValueError(f"the {what} {value!r} contains '\\'; use '/' as separator")
    if ".." in value.split("/"):
        raise ValueError(
            f"the {what} {value!r} contains '..'; it must stay inside the project folder"
        )


def _project_path(value: str) -> str:
    if value in ("", ".", "./"):
        return "."
    _check_relative(value, "project path")
    return value.strip("/") or "."


def _artifact_path(value: str) -> str:
    return _relative_path(value, "artifact path")


def parse_duration(value: str) -> int:
    """Seconds of a Go/Tekton duration string such as ``30m`` or ``1h30m``."""
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(
            f"{value!r} is not a duration; write it as Tekton does, for example 30m, 1h30m or 90s"
        )
    if total < 1:
        raise ValueError(f"the timeout {value!r} is shorter than one second")
    if total > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"the timeout {value!r} is longer than the 48h limit")
    return int(total)


def format_duration(seconds: int) -> str:
    """Go's canonical form: 1h30m0s, 5m0s, 45s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _duration(value: str) -> str:
    return format_duration(parse_duration(value))


def _env_name(value: str) -> str:
    if len(value) > 256 or not ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid environment variable name; use letters, digits and '_',"
            " not starting with a digit"
        )
    if value.upper().startswith("AJOUR_") or value.upper() in RESERVED_ENV:
        raise ValueError(
            f"{value!r} is reserved: AJOUR_* and {', '.join(sorted(RESERVED_ENV))} are set"
            " by Ajour (builder contract); choose another name"
        )
    return value


def _arg(value: str) -> str:
    if len(value) > MAX_ARG_CHARS:
        raise ValueError(
            f"a builder argument is {len(value)} characters; the limit is {MAX_ARG_CHARS}"
        )
    return value


def _args(values: tuple[str, ...]) -> tuple[str, ...]:
    size = sum(len(v.encode()) for v in values)
    if len(values) > MAX_ARGS or size > MAX_ARGS_BYTES:
        raise ValueError(
            f"args has {len(values)} items and {size} bytes; the limits are {MAX_ARGS} items"
            f" and {MAX_ARGS_BYTES} bytes. Keep builder arguments short and put large"
            " configuration into the source tree"
        )
    return values


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _git_ref(value: str) -> str:
    bad = re.search(r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|^-|^/|/$|\.lock$|^$", value)
    if len(value) > 255 or bad is not None:
        raise ValueError(
            f"{value!r} is not a valid git revision; give a branch, a tag or a commit sha"
            " (no spaces, no leading '-', none of ~^:?*[\\ and no '..')"
        )
    return value


def _file_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
        raise ValueError(
            f"{value!r} is not a safe firmware file name; use letters, digits, '.', '_' and '-'"
        )
    return value


DnsLabel = Annotated[str, BeforeValidator(text), AfterValidator(_dns_label)]
DnsSubdomain = Annotated[str, BeforeValidator(text), AfterValidator(_dns_subdomain)]
ImageRef = Annotated[str, BeforeValidator(text), AfterValidator(_image_ref)]
BuilderImage = Annotated[str, BeforeValidator(text), AfterValidator(_builder_image)]
RepositoryRef = Annotated[str, BeforeValidator(text), AfterValidator(_repository_ref)]
GitUri = Annotated[str, BeforeValidator(text), AfterValidator(_git_uri)]
GitRef = Annotated[str, BeforeValidator(text), AfterValidator(_git_ref)]
ProjectPath = Annotated[str, BeforeValidator(text), AfterValidator(_project_path)]
ArtifactPath = Annotated[str, BeforeValidator(text), AfterValidator(_artifact_path)]
Duration = Annotated[str, BeforeValidator(text), AfterValidator(_duration)]
EnvName = Annotated[str, BeforeValidator(text), AfterValidator(_env_name)]
Arg = Annotated[str, BeforeValidator(text), AfterValidator(_arg)]
Args = Annotated[tuple[Arg, ...], AfterValidator(_args)]
NonEmptyText = Annotated[str, BeforeValidator(text), AfterValidator(_non_empty)]
FileName = Annotated[str, BeforeValidator(text), AfterValidator(_file_name)]
