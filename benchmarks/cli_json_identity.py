"""Is every ``--json`` document the CLI prints on a search run byte-identical across a change?

    python benchmarks/cli_json_identity.py record RUN_DIR before.json    # on the old code
    python benchmarks/cli_json_identity.py compare RUN_DIR before.json   # on the new code

A refactor that moves the cost model, the profiles or the export code must not change what a
user's scripts read. ``record`` runs a fixed list of CLI invocations against the run directory
of ``natv2 search`` (every front subnet through ``space decode`` and ``space cost`` on several
profiles, every shipped profile through ``profiles show``, ``validate`` on every exported model,
one ``export``, as ``--json`` and as its printed summary) and stores each one's stdout and exit
code; ``compare`` runs the same list and prints which ones differ, exiting 1 if any does.

The only bytes left out of the comparison are the host's own clock readings (``validate``'s and
``export``'s ``host`` timings, ``predictors compare``'s fit seconds), which differ between two
runs of the same code, and the folder the shipped profiles are installed in (``source``,
``profile_source``), which differs between two checkouts of it. Everything else, numbers, keys
and their order, must match exactly. The CLI runs in a subprocess with this interpreter, so
``PYTHONPATH`` decides which code is judged; run it from the checkout's root (the current
folder comes first on Python's path).

Record the old code from its own installation: with natv2 installed editable from the new
checkout, running from the old checkout's root imports the old ``natv2`` but the new
``natv2.profiling``, ``natv2.export`` and ``natv2.device_profiles`` (the editable finder maps
those), which is no "before" at all. For example::

    git worktree add /tmp/old REV && python3 -m venv /tmp/oldvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/oldvenv/lib/python3.11/site-packages/deps.pth     # reuse the dependencies
    /tmp/oldvenv/bin/pip install --no-deps -e /tmp/old
    cd /tmp/old && /tmp/oldvenv/bin/python /path/to/cli_json_identity.py record RUN before.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: keys whose values are wall-clock readings of this host, masked before comparing
_CLOCK_KEYS = ("median_ms", "p90_ms", "mean_ms", "fit_seconds", "seconds", "wall_s")
_CLOCK = re.compile(r'("(?:' + "|".join(_CLOCK_KEYS) + r')": )[-0-9.eE+]+')
#: the same readings in ``export``'s human summary
_SUMMARY_CLOCK = re.compile(r"median [0-9.]+ ms, p90 [0-9.]+ ms")
_TIMING = ("--runs", "3", "--warmup", "1")
_PROFILES_FOR_COST = ("microcontroller-profile", "mobile-profile", "mcu-nano-profile")


def _invocations(run_dir: Path, scratch: Path) -> list[list[str]]:
    front = json.loads((run_dir / "front.json").read_text(encoding="utf-8"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    encoding = config["encoding"]
    calls: list[list[str]] = [["profiles", "list", "--json"]]
    listed = subprocess.run(_cli("profiles", "list", "--json"), capture_output=True, check=True)
    names = [p["name"] for p in json.loads(listed.stdout)]
    calls += [["profiles", "show", name, "--json"] for name in names]
    calls += [["space", "sample", "-e", encoding, "--seed", str(s), "--json"] for s in range(3)]
    for subnet in front:
        vector = ",".join(str(v) for v in subnet["vector"])
        calls.append(["space", "decode", vector, "-e", encoding, "--json"])
        calls.append(["space", "cost", vector, "-e", encoding, "--json"])
        calls += [
            ["space", "cost", vector, "-e", encoding, "--device", p, "--json"]
            for p in _PROFILES_FOR_COST
        ]
    for folder in sorted((run_dir / "exports").glob("*")):
        for model in ("model.onnx", "model.int8.onnx"):
            if (folder / model).is_file():
                where = ["--device", "microcontroller-profile"]
                calls.append(["validate", str(folder / model), *where, *_TIMING, "--json"])
    first = front[0]["id"]
    where = ["--device", "microcontroller-profile"]
    out = ["--out", str(scratch / "export"), "--runs", "3", "--limit", "200"]
    calls.append(["export", str(run_dir), "--subnet", first, *where, *out, "--json"])
    calls.append(["export", str(run_dir), "--subnet", first, *where, *out])  # the summary
    return calls


def _shipped_profiles_dir() -> str:
    """The folder of the shipped profiles as the CLI under judgement prints it."""
    code = "import natv2.device_profiles as d, os; print(os.path.dirname(d.__file__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from natv2.cli import main; main()", *args]


class Invocation(TypedDict):
    args: list[str]
    rc: int
    stdout: str


def _run(args: list[str], scratch: Path, shipped: str) -> Invocation:
    if args[0] == "export":
        out = scratch / "export"
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
    done = subprocess.run(_cli(*args), capture_output=True, text=True)
    stdout = _CLOCK.sub(r"\1 0", done.stdout).replace(shipped + os.sep, "<shipped profiles>/")
    stdout = _SUMMARY_CLOCK.sub("median 0 ms, p90 0 ms", stdout)
    return {"args": args, "rc": done.returncode, "stdout": stdout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "compare"))
    parser.add_argument("run_dir", type=Path, help="a `natv2 search` run directory")
    parser.add_argument("baseline", type=Path, help="the JSON file record writes, compare reads")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/natv2-cli-identity"))
    opts = parser.parse_args(argv)
    opts.scratch.mkdir(parents=True, exist_ok=True)
    calls = _invocations(opts.run_dir, opts.scratch)
    shipped = _shipped_profiles_dir()
    results = []
    for i, args in enumerate(calls, 1):
        print(f"[{i}/{len(calls)}] natv2 {' '.join(args[:3])} ...", file=sys.stderr, flush=True)
        results.append(_run(args, opts.scratch, shipped))
    if opts.mode == "record":
        opts.baseline.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        failed = [r for r in results if r["rc"] != 0]
        print(f"recorded {len(results)} invocations ({len(failed)} with a non-zero exit code)")
        return 0
    before = {json.dumps(r["args"]): r for r in json.loads(opts.baseline.read_text("utf-8"))}
    differ = 0
    for now in results:
        old = before.get(json.dumps(now["args"]))
        if old is None:
            print(f"NEW     natv2 {' '.join(now['args'])}")
            differ += 1
        elif (old["rc"], old["stdout"]) != (now["rc"], now["stdout"]):
            print(f"DIFFERS natv2 {' '.join(now['args'])} (exit {old['rc']} -> {now['rc']})")
            differ += 1
    same = len(results) - differ
    print(f"{same} of {len(results)} invocations print byte-identical output (clocks masked)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
