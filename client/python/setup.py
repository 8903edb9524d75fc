"""Generates the gRPC stubs (gen_stubs.py) into swarm_client/_proto, then builds swarm_client; see
pyproject.toml.

The .proto files are read from $SWARM_PROTO_DIR, else ../../proto beside this file (the source
tree), else ../../share/swarm/proto (an installed tree).
"""
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_stubs  # noqa: E402


def proto_dir():
    for d in (os.environ.get("SWARM_PROTO_DIR"), os.path.join(HERE, "..", "..", "proto"),
              os.path.join(HERE, "..", "..", "share", "swarm", "proto")):
        if d and os.path.isdir(os.path.join(d, "swarm", "v1")):
            return d
    raise SystemExit("swarm_client: cannot find proto/swarm/v1 (set SWARM_PROTO_DIR)")


# Before setup(), so that find_packages sees the generated subpackages.
gen_stubs.generate(proto_dir(), os.path.join(HERE, "swarm_client"))
setup(packages=find_packages(where=HERE, include=["swarm_client", "swarm_client.*"]))
