"""One rollout engine per node under torchrun: which rank opens it, and how the others get data.

torchrun numbers the ranks of a node contiguously (RANK = the node's first rank + LOCAL_RANK,
LOCAL_WORLD_SIZE ranks per node), so LOCAL_RANK 0 of every node, its *leader*, opens the engine
(``opens_engine``) and works for ``node_ranks()``; ``from_leaders`` hands what the leaders made to
every rank. The other ranks get an ``engineless`` handle: the codec, the vocabulary and EOS of
the base, no engine (a toy base is pure Python: they get the toy itself).

Without torchrun's LOCAL_RANK (or not distributed) every process is its own node's leader.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_rank() -> tuple[int, int]:
    """(LOCAL_RANK, LOCAL_WORLD_SIZE) from torchrun's environment; (0, 1) when WORLD_SIZE <= 1
    or torchrun's variables are absent. Readable before the process group starts."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "LOCAL_RANK" not in os.environ:
        return 0, 1
    return int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def opens_engine() -> bool:
    """Whether this process opens its node's rollout engine (LOCAL_RANK 0)."""
    return local_rank()[0] == 0


def node_ranks() -> range:
    """The global ranks of this process's node (the ones its leader collects for)."""
    rank = dist.get_rank() if _distributed() else 0
    local, per_node = local_rank()
    return range(rank - local, rank - local + per_node)


def from_leaders(mine: Any) -> list[Any]:
    """Every node leader's ``mine``, in rank order, on every rank (other ranks pass anything;
    it is ignored). One broadcast per node, so a rank receives each leader's data once."""
    if not _distributed():
        return [mine]
    leaders: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(leaders, node_ranks().start)
    out = []
    for src in sorted(set(leaders)):
        box = [mine if dist.get_rank() == src else None]
        dist.broadcast_object_list(box, src=src)
        out.append(box[0])
    return out


class NoEngineLM:
    """The base's vocabulary and EOS on a rank without an engine; it has no log-probs."""

    def __init__(self, vocab_size: int, eos_token_id: int):
        self.vocab_size, self.eos_token_id = vocab_size, eos_token_id

    async def logprobs(self, contexts):
        raise RuntimeError("no rollout engine on this rank: under torchrun only LOCAL_RANK 0 of "
                           "each node opens one (training.nodes)")


class Engineless:
    """A handle without an engine: ``codec`` (the model directory's tokenizer, as the engines
    build it) and ``lm`` (a ``NoEngineLM``: vocabulary from config.json, EOS from the codec)."""

    kind = "none"

    def __init__(self, model: str):
        from engines.hf_codec import HFCodec, read_hf_config
        from engines.loader import resolve_model_dir

        model_dir = resolve_model_dir(model)
        self.name = str(model_dir)
        self.codec = HFCodec(model_dir)
        self.lm = NoEngineLM(int(read_hf_config(model_dir)[1]["vocab_size"]),
                             self.codec.eos_token_id)
        self.value_models: dict[str, Any] = {}

    async def aclose(self) -> None:
        return None


def engineless(model: str) -> Any:
    """The handle of a rank that opens no engine: ``Engineless``, or for a toy spec the toy
    engine itself (pure Python, no process)."""
    if model.startswith("toy:"):
        from engines.toy_engine import ToyEngine

        return ToyEngine(model)
    return Engineless(model)
