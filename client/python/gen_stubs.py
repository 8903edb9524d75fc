#!/usr/bin/env python3
"""Generates the Python messages and gRPC stubs of proto/swarm/v1/*.proto into swarm_client/_proto.

The one generator of the Python client's stubs: the CMake build (target swarm_python) and
`pip install` (setup.py) both run it. It uses Debian's protoc and grpc_python_plugin
(protobuf-compiler, protobuf-compiler-grpc) and rewrites the generated `from swarm.v1 import`
lines so the stubs live inside the swarm_client package instead of a top-level `swarm` package.

usage: gen_stubs.py --proto-dir DIR --out PACKAGE_DIR [--protoc PATH] [--plugin PATH]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys


def generate(proto_dir, out_dir, protoc="protoc", plugin=None):
    plugin = plugin or shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    protos = sorted(glob.glob(os.path.join(proto_dir, "swarm", "v1", "*.proto")))
    if not protos:
        raise SystemExit(f"gen_stubs.py: no swarm/v1/*.proto under {proto_dir}")
    gen = os.path.join(out_dir, "_proto")
    os.makedirs(gen, exist_ok=True)
    cmd = [protoc, f"--proto_path={proto_dir}", f"--python_out={gen}", f"--grpc_python_out={gen}",
           f"--plugin=protoc-gen-grpc_python={plugin}"] + protos
    try:
        subprocess.run(cmd, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"gen_stubs.py: {' '.join(cmd)} failed: {e} (install protobuf-compiler "
                         "and protobuf-compiler-grpc)")
    for d in (gen, os.path.join(gen, "swarm"), os.path.join(gen, "swarm", "v1")):
        open(os.path.join(d, "__init__.py"), "a").close()
    for path in glob.glob(os.path.join(gen, "swarm", "v1", "*.py")):
        with open(path) as f:
            text = f.read()
        text = re.sub(r"^from swarm\.v1 import", "from swarm_client._proto.swarm.v1 import", text,
                      flags=re.M)
        with open(path, "w") as f:
            f.write(text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--protoc", default="protoc")
    p.add_argument("--plugin", default=None)
    a = p.parse_args()
    generate(a.proto_dir, a.out, a.protoc, a.plugin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
