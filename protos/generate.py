"""Regenerates the Python stubs of the wire format: `python protos/generate.py` (from anywhere).

Writes `protos/wsrl/v1/learner_pb2.py`, `learner_pb2.pyi` and `learner_pb2_grpc.py` with the
protoc bundled in grpcio-tools, so the output depends only on the installed grpcio-tools
version. `--out DIR` writes elsewhere (the stub freshness test uses it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The repository root is the proto import root, so the stubs import each other as
# `protos.wsrl.v1....` and need nothing added to sys.path.
ROOT = Path(__file__).resolve().parent.parent
PROTO = "protos/wsrl/v1/learner.proto"


def generate(out_dir: Path = ROOT) -> list[Path]:
    """Runs protoc on the learner proto into `out_dir`; returns the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    (out_dir / "protos" / "wsrl" / "v1").mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {ROOT / PROTO}")
    stem = out_dir / "protos" / "wsrl" / "v1" / "learner"
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT), help="output root; files land in OUT/protos/wsrl/v1 (default: the repository root)")
    args = parser.parse_args(argv)
    for path in generate(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
