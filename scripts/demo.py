"""The end-to-end demo on embedded defaults (no cluster).

Today it runs the source-to-manifest half of the story: validate the example fleet,
render Tekton v1 PipelineRuns, check them against the v1 schemas, and show the allowlist
refusing an application. Builds, publishing and delivery join as they land.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "examples" / "fleet"


def run(console: Console, title: str, args: list[str], expect: int = 0) -> str:
    started = time.perf_counter()
    with console.status(title):
        result = subprocess.run(args, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    ok = result.returncode == expect
    mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
    console.print(f"{mark} {title} [dim]({took:.2f}s)[/]")
    if not ok:
        console.print(result.stdout, result.stderr)
        raise SystemExit(f"demo step failed: {title}")
    return result.stdout + result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="Where to write the PipelineRuns.")
    args = parser.parse_args()
    console = Console(highlight=False)
    bin_dir = Path(sys.executable).parent
    build = str(bin_dir / "ajour-build")
    started = time.perf_counter()
    out = args.out or Path(tempfile.mkdtemp(prefix="ajour-demo-"))

    console.rule("Ajour demo: fleet specs to Tekton v1")
    run(console, "validate examples/fleet", [build, "validate", str(FLEET)])
    run(console, f"render PipelineRuns into {out}", [build, "render", str(FLEET), "-o", str(out)])
    rogue = Path(tempfile.mkdtemp(prefix="ajour-rogue-"))
    (rogue / "rogue.yaml").write_text(
        (FLEET / "blinky.yaml").read_text().split("---")[0].replace("name: blinky", "name: rogue")
    )
    refusal = run(
        console,
        "allowlist refuses an application that is not allowed",
        [
            build,
            "render",
            str(FLEET),
            str(rogue),
            "--config",
            str(FLEET / "ajour.yaml"),
            "--stdout",
        ],
        expect=1,
    )
    table = Table("PipelineRun file", "bytes")
    for path in sorted(out.glob("*.yaml")):
        table.add_row(path.name, str(path.stat().st_size))
    console.print(table)
    console.print(f"[yellow]refusal:[/] {refusal.strip()}")
    console.print(
        f"\nApply them to a cluster with Tekton installed:\n"
        f"  kubectl apply -n ajour -R -f pipelines/ && kubectl apply -f {out}/\n"
        f"done in {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
