"""The exception tree of the build side: every error is an :class:`AjourError`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One precise finding: where it is, what is wrong, and how to fix it."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None
    hint: str | None = None

    def location(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def render(self) -> str:
        text = f"{self.location()}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


def problem_order(problem: Problem) -> tuple[str, int, int]:
    """Sort key: by file, then line and column (problems without a place first in a file)."""
    return (problem.file or "", problem.line or 0, problem.column or 0)


EXIT_CODES = (
    'Exit codes: 0 success; 1 an error (error: … on stderr, or {"error": …} with --json);'
    " 2 a usage error; 3 a port in use."
)


class AjourError(Exception):
    """Base of every error Ajour raises on purpose; both CLIs exit with its ``exit_code``
    (README "Exit codes": 1 for an error, 3 for a port in use; click's usage errors are 2)."""

    exit_code = 1


@dataclass
class SpecError(AjourError):
    """The fleet specs or the installation config are invalid."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        return head + ":\n" + "\n".join(p.render() for p in self.problems)


class ConfigError(AjourError):
    """The installation config cannot be found or read."""


class CatalogError(AjourError):
    """The builder catalog directory is missing, not a directory, or holds no builders."""


class NotAllowedError(AjourError):
    """A build was refused because its application is not on the allowlist."""

    def __init__(self, refusals: list[str]) -> None:
        self.refusals = refusals
        super().__init__("\n".join(refusals))


class RenderError(AjourError):
    """A rendered manifest failed validation (a bug in Ajour or its templates)."""


class ManifestError(AjourError):
    """A Tekton manifest is not valid against the v1 schema or Ajour's rules."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} schema problem(s):\n{body}")


class OutputError(AjourError):
    """Output could not be written."""


class SourceError(AjourError):
    """The git source cannot be fetched or the revision does not exist."""


class BuildError(AjourError):
    """A build failed; ``log_tail`` holds the last lines of its log."""

    def __init__(self, message: str, log_tail: list[str] | None = None) -> None:
        self.log_tail = log_tail or []
        text = message
        if self.log_tail:
            text += "\nlast log lines:\n" + "\n".join(f"  | {line}" for line in self.log_tail)
        super().__init__(text)


class BuildCancelled(BuildError):
    """A build was interrupted (Ctrl-C or a cancel request)."""


class PublishError(AjourError):
    """Publishing failed (registry or hawkBit unreachable, refused, or inconsistent)."""


class ArtifactError(AjourError):
    """A published artifact cannot be read back or fails its checks (digest, layout)."""


class PortInUseError(AjourError):
    """A server cannot listen because another process holds its address (exit code 3, so a
    script can pick another port and try again)."""

    exit_code = 3

    def __init__(self, host: str, port: int, program: str, option: str) -> None:
        self.host, self.port = host, port
        super().__init__(
            f"port {port} on {host} is in use (another {program}?): choose another with {option}"
        )
