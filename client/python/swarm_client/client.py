"""swarm_client.Client: Generate, Predict, EstimateMemory and Status of a swarm-coordinator."""
import dataclasses
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from swarm_client._proto.swarm.v1 import coordinator_pb2 as pb
from swarm_client._proto.swarm.v1 import coordinator_pb2_grpc as pb_grpc
from swarm_client._proto.swarm.v1 import tensor_pb2

# The coordinator's messages can carry a whole prompt's ids; as the C++ SDK (rpc/channel.h).
_MAX_MESSAGE_BYTES = 64 << 20


class SwarmError(Exception):
    """A failed call: `code` is the grpc.StatusCode, the message the coordinator's reason."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass
class GenerateResult:
    """What a finished generate() call produced (Client.last_result)."""
    prompt_ids: List[int] = dataclasses.field(default_factory=list)
    ids: List[int] = dataclasses.field(default_factory=list)  # Generated ids only.
    text: str = ""
    finish_reason: str = ""  # "eos", "length", "context".
    request_id: str = ""
    blocks: List[int] = dataclasses.field(default_factory=list)  # Sparse mode: the blocks run.
    block_weights: List[float] = dataclasses.field(default_factory=list)
    num_blocks: int = 0


_DTYPES = {tensor_pb2.DTYPE_F32: "f32", tensor_pb2.DTYPE_F16: "f16", tensor_pb2.DTYPE_BF16: "bf16"}
_MODES = {"exact": pb.MODE_EXACT, "sparse": pb.MODE_SPARSE}
_COMBINES = {"sequential": pb.COMBINE_SEQUENTIAL, "parallel": pb.COMBINE_PARALLEL}


def _error(e: grpc.RpcError) -> SwarmError:
    return SwarmError(e.code(), e.details() or "")


class Client:
    """A connection to one swarm-coordinator ("HOST:PORT"). Thread-safe, as a gRPC channel is."""

    def __init__(self, address: str, timeout: float = 600.0):
        self.address = address
        self.timeout = timeout  # Default deadline of a generate() call, in seconds.
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                              ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)])
        self._stub = pb_grpc.CoordinatorServiceStub(self._channel)
        self.last_result: Optional[GenerateResult] = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def generate(self, prompt: Union[str, Sequence[int]], max_new_tokens: int = 64,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 mode: str = "exact", top_k_blocks: int = 0, combine: str = "sequential",
                 stop_at_eos: bool = True, add_special_tokens: bool = True,
                 request_id: str = "", timeout: Optional[float] = None) -> Iterator[str]:
        """Streams the generated text, chunk by chunk (each chunk is final text).

        `prompt` is text (tokenized by the coordinator) or a list of token ids. temperature 0 is
        greedy; mode "sparse" runs the router's top_k_blocks blocks. When the iterator is
        exhausted, `last_result` holds the ids, the finish reason and the prompt ids. Breaking
        out of the loop cancels the request (its sessions are freed). Raises SwarmError
        (INVALID_ARGUMENT for bad parameters, UNAVAILABLE when the workers do not cover the
        model, ...).
        """
        if mode not in _MODES:
            raise ValueError(f"mode {mode!r}: want exact or sparse")
        if combine not in _COMBINES:
            raise ValueError(f"combine {combine!r}: want sequential or parallel")
        req = pb.GenerateRequest(mode=_MODES[mode], top_k_blocks=top_k_blocks,
                                 combine=_COMBINES[combine], request_id=request_id)
        if isinstance(prompt, str):
            req.prompt = prompt
        else:
            req.prompt_ids.extend(int(i) for i in prompt)
        req.add_special_tokens = add_special_tokens
        s = req.sampling
        s.max_new_tokens = max_new_tokens
        s.temperature = temperature
        s.top_k = top_k
        s.top_p = top_p
        s.seed = seed
        s.stop_at_eos = stop_at_eos
        result = GenerateResult()
        self.last_result = None
        call = self._stub.Generate(req, timeout=self.timeout if timeout is None else timeout)
        try:
            for resp in call:
                if resp.prompt_ids:
                    result.prompt_ids = list(resp.prompt_ids)
                if resp.request_id:
                    result.request_id = resp.request_id
                if resp.num_blocks:
                    result.blocks = list(resp.blocks)
                    result.block_weights = list(resp.block_weights)
                    result.num_blocks = resp.num_blocks
                result.ids.extend(resp.ids)
                if resp.finish_reason:
                    result.finish_reason = resp.finish_reason
                if resp.text:
                    result.text += resp.text
                    yield resp.text
        except grpc.RpcError as e:
            raise _error(e) from None
        finally:
            call.cancel()  # No-op once finished; frees the sessions of an abandoned stream.
        self.last_result = result

    def generate_ids(self, prompt: Union[str, Sequence[int]], **kwargs) -> GenerateResult:
        """generate() run to the end; returns its GenerateResult."""
        for _ in self.generate(prompt, **kwargs):
            pass
        return self.last_result

    def predict_blocks(self, prompt: Union[str, Sequence[int]], top_k: int = 3,
                       timeout: float = 10.0) -> Tuple[List[int], List[float]]:
        """The blocks the coordinator's router would run for `prompt` and their weights, without
        running any (FAILED_PRECONDITION when the coordinator has no router file)."""
        req = pb.PredictRequest(top_k_blocks=top_k)
        if isinstance(prompt, str):
            req.prompt = prompt
        else:
            req.prompt_ids.extend(int(i) for i in prompt)
        try:
            resp = self._stub.Predict(req, timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return [b.block for b in resp.blocks], [b.weight for b in resp.blocks]

    def estimate_vram_savings(self, num_blocks: int = 0, top_k: int = 0, num_workers: int = 0,
                              dtype: str = "", timeout: float = 10.0) -> Dict:
        """Weight memory of sparse serving for the served model (EstimateMemory): a dict with
        savings_ratio (1 - active / total), total_bytes, active_bytes, block_bytes, ...
        num_blocks 0 = the router's N (or one block per layer), top_k 0 = all blocks."""
        req = pb.EstimateMemoryRequest(num_blocks=num_blocks, top_k_blocks=top_k,
                                       num_workers=num_workers, dtype=dtype)
        try:
            r = self._stub.EstimateMemory(req, timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return {
            "num_blocks": r.num_blocks,
            "top_k": r.top_k_blocks,
            "dtype": r.dtype,
            "embedding_bytes": r.embedding_bytes,
            "head_bytes": r.head_bytes,
            "layer_bytes": list(r.layer_bytes),
            "block_bytes": list(r.block_bytes),
            "blocks_bytes": r.blocks_bytes,
            "total_bytes": r.total_bytes,
            "active_block_bytes": r.active_block_bytes,
            "active_bytes": r.active_bytes,
            "savings_ratio": r.savings_ratio,
            "block_savings_ratio": r.block_savings_ratio,
            "worker_bytes": list(r.worker_bytes),
            "worker_blocks": [(w.begin, w.end) for w in r.worker_blocks],
            "kv_bytes_per_token": r.kv_bytes_per_token,
        }

    def status(self, timeout: float = 10.0) -> Dict:
        """The coordinator's view: serving, reason, model, and per worker its layers and load
        (the same fields as `swarm status --json`)."""
        try:
            s = self._stub.Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        workers = []
        for w in s.workers:
            workers.append({
                "address": w.address, "reachable": w.reachable, "compatible": w.compatible,
                "ready": w.ready, "error": w.error,
                "layers": [{"begin": l.begin, "end": l.end} for l in w.layers],
                "device": w.device, "dtype": _DTYPES.get(w.dtype, ""), "sessions": w.sessions,
                "max_sessions": w.max_sessions, "kv_used_bytes": w.kv_used_bytes,
                "kv_reserved_bytes": w.kv_reserved_bytes, "kv_budget_bytes": w.kv_budget_bytes,
                "weight_bytes": w.weight_bytes, "inflight_steps": w.inflight_steps,
                "active_requests": w.active_requests, "steps_total": w.steps_total,
            })
        return {
            "serving": s.serving, "reason": s.reason, "model_fingerprint": s.model_fingerprint,
            "architecture": s.architecture, "num_layers": s.num_layers,
            "max_position_embeddings": s.max_position_embeddings,
            "active_requests": s.active_requests, "requests_total": s.requests_total,
            "version": s.version, "router": s.router, "workers": workers,
        }
