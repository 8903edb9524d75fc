#!/usr/bin/env python3
"""The Python client (swarm_client) against a local cluster of real processes: generate's greedy
ids equal the golden ids of ../shared (and `swarm generate`'s), predict_blocks equals `swarm
predict --json`, estimate_vram_savings equals `swarm memory --server --json`, status equals
`swarm status --json`.

usage: python_client_test.py BUILD_DIR SHARED_DIR   (PYTHONPATH holds the built swarm_client)
Exit 77 (ctest: skipped) when python3-grpcio is missing, unless CI=true.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

try:
    import grpc  # noqa: F401
except ImportError:
    print("python3-grpcio is not installed (scripts/setup.sh installs it)", file=sys.stderr)
    sys.exit(1 if os.environ.get("CI") == "true" else 77)

from swarm_client import Client, SwarmError  # noqa: E402

BUILD, SHARED = sys.argv[1], sys.argv[2]
MODEL = os.path.join(SHARED, "models", "stories260K")
GOLDEN = os.path.join(SHARED, "fixtures", "golden", "stories260K", "golden.safetensors")


def golden_ids(key):
    """An int64 tensor of the golden safetensors file (header: u64 length, JSON)."""
    with open(GOLDEN, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        t = header[key]
        assert t["dtype"] == "I64", t
        begin, end = t["data_offsets"]
        f.seek(8 + n + begin)
        data = f.read(end - begin)
    return list(struct.unpack(f"<{len(data) // 8}q", data))


def swarm(*args):
    out = subprocess.run([os.path.join(BUILD, "swarm"), *args], check=True, capture_output=True,
                         text=True, timeout=120)
    return out.stdout


class Server:
    """A swarm server process; `address` is what it printed after "listening on "."""

    def __init__(self, argv, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.address = None
        for line in self.proc.stdout:
            if line.startswith("listening on "):
                self.address = line.split()[-1]
                break
        if self.address is None:
            raise RuntimeError(f"{argv[0]} did not start; see {log}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="swarm-python-")
        d = cls.tmp.name
        # A router file for predict_blocks (N = 5: one block per layer of stories260K).
        cls.router = os.path.join(d, "router.safetensors")
        subprocess.run([os.path.join(BUILD, "swarm"), "calibrate", "--model", MODEL,
                        "--num-blocks", "5", "--num-prompts", "16", "--out", cls.router],
                       check=True, capture_output=True, timeout=300)
        bins = BUILD
        cls.workers = [
            Server([os.path.join(bins, "swarm-worker"), "--model", MODEL, "--layers", layers,
                    "--listen", "127.0.0.1:0", "--kv-budget", "64MiB"],
                   os.path.join(d, f"worker{i}.log"))
            for i, layers in enumerate(["0-2", "3-4"])]
        cls.coordinator = Server(
            [os.path.join(bins, "swarm-coordinator"), "--model", MODEL, "--workers",
             ",".join(w.address for w in cls.workers), "--listen", "127.0.0.1:0", "--router",
             cls.router, "--num-blocks", "5"], os.path.join(d, "coordinator.log"))
        cls.address = cls.coordinator.address
        cls.client = Client(cls.address)
        import time
        deadline = time.time() + 60
        while not cls.client.status()["serving"]:
            if time.time() > deadline:
                raise RuntimeError("the coordinator is not serving")
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.coordinator.stop()
        for w in cls.workers:
            w.stop()
        cls.tmp.cleanup()

    def test_generate_streams_the_golden_greedy_ids(self):
        prompt = golden_ids("greedy.input_ids")
        want = golden_ids("greedy.greedy")
        chunks = list(self.client.generate(prompt, max_new_tokens=len(want), stop_at_eos=False))
        result = self.client.last_result
        self.assertEqual(result.ids, want)
        self.assertEqual(result.prompt_ids, prompt)
        self.assertEqual(result.finish_reason, "length")
        self.assertEqual("".join(chunks), result.text)
        cli = json.loads(swarm("generate", "--server", self.address, "--ids",
                               ",".join(map(str, prompt)), "--max-new-tokens", str(len(want)),
                               "--no-stop", "--json"))
        self.assertEqual(cli["ids"], want)
        self.assertEqual(cli["text"], result.text)

    def test_generate_text_prompt_and_sampling_match_the_cli(self):
        text = "".join(self.client.generate("Once upon a time", max_new_tokens=40))
        self.assertIn("there was a little girl named Lily", text)
        args = dict(max_new_tokens=24, temperature=0.8, top_k=20, top_p=0.9, seed=7)
        self.client.generate_ids("Once upon a time", **args)
        cli = json.loads(swarm("generate", "--server", self.address, "--prompt",
                               "Once upon a time", "--max-new-tokens", "24", "--temperature",
                               "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "7", "--json"))
        self.assertEqual(self.client.last_result.ids, cli["ids"])

    def test_sparse_generate_reports_its_blocks(self):
        r = self.client.generate_ids("Once upon a time", max_new_tokens=4, mode="sparse",
                                     top_k_blocks=3)
        self.assertEqual(r.num_blocks, 5)
        self.assertEqual(len(r.blocks), 3)

    def test_bad_parameters_raise_invalid_argument(self):
        with self.assertRaises(SwarmError) as e:
            list(self.client.generate("x", temperature=-1))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(ValueError):
            list(self.client.generate("x", mode="fast"))

    def test_predict_blocks_equals_swarm_predict(self):
        blocks, weights = self.client.predict_blocks("Once upon a time", top_k=3)
        cli = json.loads(swarm("predict", "--server", self.address, "--prompt",
                               "Once upon a time", "--top-k-blocks", "3", "--json"))
        self.assertEqual(blocks, cli["blocks"])
        self.assertEqual(len(blocks), 3)
        for got, want in zip(weights, cli["weights"]):
            self.assertAlmostEqual(got, want, places=6)

    def test_estimate_vram_savings_equals_swarm_memory(self):
        m = self.client.estimate_vram_savings(num_blocks=5, top_k=3)
        # The reference: router/memory.h on the checkpoint itself, in the CLI's own process.
        cli = json.loads(swarm("memory", "--model", MODEL, "--num-blocks", "5",
                               "--top-k-blocks", "3", "--json"))
        self.assertGreater(m["savings_ratio"], 0)
        self.assertLess(m["savings_ratio"], 1)
        self.assertAlmostEqual(m["savings_ratio"], cli["savings_ratio"], places=9)
        self.assertEqual(m["total_bytes"], cli["total_bytes"])
        self.assertEqual(m["block_bytes"], cli["block_bytes"])
        self.assertAlmostEqual(m["savings_ratio"], 1 - m["active_bytes"] / m["total_bytes"],
                               places=9)

    def test_status_equals_swarm_status(self):
        s = self.client.status()
        cli = json.loads(swarm("status", "--server", self.address, "--json"))
        self.assertTrue(s["serving"])
        for key in ("serving", "model_fingerprint", "architecture", "num_layers",
                    "max_position_embeddings"):
            self.assertEqual(s[key], cli[key], key)
        self.assertEqual([w["address"] for w in s["workers"]],
                         [w["address"] for w in cli["workers"]])
        self.assertEqual([w["layers"] for w in s["workers"]], [w["layers"] for w in cli["workers"]])
        self.assertEqual([w["dtype"] for w in s["workers"]], [w["dtype"] for w in cli["workers"]])

    def test_unreachable_coordinator_is_unavailable(self):
        with Client("127.0.0.1:1") as c:
            with self.assertRaises(SwarmError) as e:
                c.status(timeout=2)
            self.assertIn(e.exception.code,
                          (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
