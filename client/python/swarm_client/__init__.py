"""Python client of a Swarm cluster: talks to a swarm-coordinator over gRPC.

    from swarm_client import Client
    client = Client("127.0.0.1:7000")
    for chunk in client.generate("Once upon a time", max_new_tokens=32):
        print(chunk, end="", flush=True)
    blocks, weights = client.predict_blocks("Once upon a time", top_k=3)
    client.estimate_vram_savings(num_blocks=5, top_k=3)["savings_ratio"]
    client.status()["serving"]

Built on Debian's python3-grpcio and python3-protobuf; the stubs are generated from
proto/swarm/v1/*.proto by the build (CMake target swarm_python, or `pip install`).
"""
from swarm_client.client import Client, GenerateResult, SwarmError

__all__ = ["Client", "GenerateResult", "SwarmError"]
