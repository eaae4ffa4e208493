"""The value model format and a plain-torch ``ValueModel``.

A value model is a Hugging Face causal-LM directory that shares the base model's tokenizer.
Its output logits at the last position of a context s are soft-value corrections:

    Q(s, a) = logits_theta(s)[a]                       (scalar model, trained at one beta)
    Q(s, a) = beta * log sum_k p_theta(k | s, a) exp(z_k / beta)
                                                       (distributional model with atoms z_k,
                                                        logits reshaped [V, K], softmax over k)

and guided logits are  l_ref(s, .) + Q(s, .) / beta  (docs/math.md).

The directory holds ``config.json``, ``model.safetensors``, the tokenizer files and a manifest
``tilt.json``:

    format              "tilt-value-model"
    version             1
    base_model          name or path of the base model it was trained for
    tokenizer_sha256    sha256 of the canonical tokenizer.json (see ``tokenizer_fingerprint``)
    vocab_size          V (must equal the base model's)
    reward              the reward spec it was trained for (string or dict)
    beta                the beta it was trained at (null for distributional models)
    serve_beta          optional: the beta to guide at by default when serving, chosen by
                        evaluation (a value model trained at one beta is often best used at
                        another: its Q is shrunk towards the mean); null = ``beta``
    atoms               distributional atoms z_1..z_K (null for scalar models)
    training            free-form training statistics (steps, loss, data, seed, ...)

``load_value_model(path, base_dir)`` checks the manifest and the tokenizer fingerprint
against the base model and raises ``ValueModelError`` (a ``ValueError``) on any mismatch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

MANIFEST = "tilt.json"
FORMAT = "tilt-value-model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class ValueModelError(ValueError):
    """A value model that cannot be used (missing files, bad manifest, other tokenizer)."""


@dataclass
class ValueModelManifest:
    base_model: str
    tokenizer_sha256: str
    vocab_size: int
    reward: Any = None
    beta: float | None = None
    atoms: list[float] | None = None
    serve_beta: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = 1

    @classmethod
    def read(cls, directory: str | Path) -> ValueModelManifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise ValueModelError(f"{directory}: not a Tilt value model (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueModelError(f"{path}: invalid JSON ({exc})") from exc
        if data.get("format") != FORMAT:
            raise ValueModelError(f"{path}: format must be {FORMAT!r}, got {data.get('format')!r}")
        missing = [k for k in ("base_model", "tokenizer_sha256", "vocab_size") if k not in data]
        if missing:
            raise ValueModelError(f"{path}: missing manifest fields {missing}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, directory: str | Path) -> None:
        (Path(directory) / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")


def tokenizer_fingerprint(path: str | Path) -> str:
    """sha256 of the canonical tokenizer.json (keys sorted, compact separators, UTF-8).

    ``path`` is a tokenizer.json file or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ValueModelError(f"no tokenizer.json at {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _config_vocab_size(directory: str | Path) -> int:
    cfg = json.loads((Path(directory) / "config.json").read_text())
    return int(cfg["vocab_size"])


def save_value_model(model: torch.nn.Module, out_dir: str | Path, *, base_dir: str | Path,
                     reward: Any = None, beta: float | None = None,
                     atoms: Sequence[float] | None = None,
                     training: dict[str, Any] | None = None,
                     base_model: str | None = None) -> Path:
    """Write ``model`` (a transformers causal LM) as a Tilt value model directory.

    The tokenizer files are copied from ``base_dir`` (the base model directory) and the
    manifest records its fingerprint. Exactly one of ``beta`` (scalar Q trained at that beta)
    and ``atoms`` (distributional model: output size V * len(atoms)) should be given.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(base_dir)
    if (beta is None) == (atoms is None):
        raise ValueModelError("give exactly one of beta (scalar Q) or atoms (distributional Q)")
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    vocab = _config_vocab_size(base)
    manifest = ValueModelManifest(
        base_model=base_model or str(base), tokenizer_sha256=tokenizer_fingerprint(base),
        vocab_size=vocab, reward=reward, beta=None if beta is None else float(beta),
        atoms=None if atoms is None else [float(a) for a in atoms], training=dict(training or {}))
    manifest.write(out)
    check_value_model(out, base)
    return out


def check_value_model(path: str | Path, base_dir: str | Path | None = None) -> ValueModelManifest:
    """Validate a value model directory (and its compatibility with ``base_dir`` if given).

    Raises ``ValueModelError`` naming the problem; returns the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise ValueModelError(f"value model {str(path)!r} is not a directory")
    manifest = ValueModelManifest.read(path)
    if not (path / "config.json").is_file():
        raise ValueModelError(f"{path}: no config.json (expected a Hugging Face causal LM)")
    out_dim = _config_vocab_size(path)
    k = len(manifest.atoms) if manifest.atoms else 1
    if out_dim != manifest.vocab_size * k:
        raise ValueModelError(f"{path}: output size {out_dim} != vocab_size {manifest.vocab_size}"
                              f" x {k} atom(s)")
    if manifest.atoms is None and (manifest.beta is None or manifest.beta <= 0):
        raise ValueModelError(f"{path}: a scalar value model needs beta > 0 in {MANIFEST}")
    if manifest.serve_beta is not None and not (isinstance(manifest.serve_beta, (int, float))
                                                and manifest.serve_beta > 0):
        raise ValueModelError(f"{path}: serve_beta must be null or > 0 in {MANIFEST}, got "
                              f"{manifest.serve_beta!r}")
    if base_dir is not None:
        base_fp = tokenizer_fingerprint(base_dir)
        if manifest.tokenizer_sha256 != base_fp:
            raise ValueModelError(
                f"value model {str(path)!r} uses a different tokenizer than base model "
                f"{str(base_dir)!r} (tokenizer sha256 {manifest.tokenizer_sha256[:12]}... != "
                f"{base_fp[:12]}...)")
        base_vocab = _config_vocab_size(base_dir)
        if manifest.vocab_size != base_vocab:
            raise ValueModelError(f"value model {str(path)!r} has vocab_size {manifest.vocab_size}"
                                  f" but base model {str(base_dir)!r} has {base_vocab}")
    return manifest


def q_from_logits(logits: torch.Tensor, beta: float | torch.Tensor,
                  atoms: torch.Tensor | None) -> torch.Tensor:
    """Q(s, .) from value-model output rows ``logits`` [B, V*K].

    Scalar model (atoms None): Q = logits.
    Distributional: Q[a] = beta * logsumexp_k(log_softmax_k(logits[a, :]) + z_k / beta);
    ``beta`` may be a float or a [B] tensor.
    """
    if atoms is None:
        return logits
    b, vk = logits.shape
    k = atoms.numel()
    logp = torch.log_softmax(logits.view(b, vk // k, k), dim=-1)
    beta_t = torch.as_tensor(beta, dtype=logits.dtype, device=logits.device).reshape(-1, 1, 1)
    return beta_t[..., 0] * torch.logsumexp(logp + atoms.to(logits) / beta_t, dim=-1)


class PrefixKVCache:
    """Incremental last-position logits over many growing contexts (particles).

    Keeps up to ``max_entries`` contexts (LRU), each with a KV-cache slot of a ``LeanLlama``
    holding exactly that context. A queried context whose parent (context minus its last
    token) is kept takes over the parent's slot (the first child) or a copy of it (further
    children, e.g. after resampling) and is extended by one token; others are computed from
    scratch. All extensions of one call run batched.
    """

    def __init__(self, lean: Any, max_entries: int = 256):
        self.lean = lean
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[int, ...], tuple[int, torch.Tensor]] = OrderedDict()

    def last_logits(self, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        keys = [tuple(int(t) for t in c) for c in contexts]
        rows: dict[tuple[int, ...], torch.Tensor] = {}
        claimed: dict[tuple[int, ...], int] = {}  # parent -> its slot, taken over this call
        plan: list[tuple[tuple[int, ...], int, int]] = []  # (key, slot, start)
        for k in dict.fromkeys(keys):
            if k in self.entries:
                self.entries.move_to_end(k)
                rows[k] = self.entries[k][1]
                continue
            parent = k[:-1]
            if parent in self.entries:
                slot = self.entries.pop(parent)[0]
                claimed[parent] = slot
                plan.append((k, slot, len(parent)))
            elif parent in claimed:
                slot = self.lean.alloc()
                self.lean.copy_slot(claimed[parent], slot, len(parent))
                plan.append((k, slot, len(parent)))
            else:
                plan.append((k, self.lean.alloc(), 0))
        if plan:
            out = self.lean.extend([s for _, s, _ in plan], [st for _, _, st in plan],
                                   [k[st:] for k, _, st in plan]).cpu()
            for (k, slot, _), row in zip(plan, out, strict=True):
                rows[k] = row
                self.entries[k] = (slot, row)
        while len(self.entries) > self.max_entries:
            _, (slot, _) = self.entries.popitem(last=False)
            self.lean.free(slot)
        return torch.stack([rows[k] for k in keys])


class TorchValueModel:
    """``decoders.protocols.ValueModel`` over a transformers causal LM (plain torch, batched).

    q_values(contexts, beta) runs one right-padded forward over the batch (causal attention
    means pads after a context never affect its last position) and returns Q at each
    context's last position as float64 [B, V]. Llama-architecture value models are
    evaluated incrementally instead (``PrefixKVCache`` over the lean forward), so a particle
    method that extends each context by one token per call pays for one token, not the prefix.

    An engine that applies the model natively sets the attribute ``native_name`` on the
    instance (``decoders.blocks`` routes guided sampling to the engine only then).
    """

    def __init__(self, path: str | Path, base_dir: str | Path | None = None, *,
                 device: str = "cpu", name: str | None = None, incremental: bool = True,
                 max_cached_contexts: int = 256):
        from transformers import AutoModelForCausalLM

        self.path = Path(path)
        self.manifest = check_value_model(self.path, base_dir)
        self.name = name or self.path.name
        self.vocab_size = self.manifest.vocab_size
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=torch.float32).to(self.device).eval()
        self.atoms = (None if self.manifest.atoms is None
                      else torch.tensor(self.manifest.atoms, dtype=torch.float32))
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self._prefix: PrefixKVCache | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"value-{self.name}")
        if incremental:
            from engines.lean_llama import LeanLlama, is_supported

            if is_supported(self.model.config.to_dict()):
                self._prefix = PrefixKVCache(LeanLlama(self.path, device=self.device),
                                             max_entries=max_cached_contexts)

    def metadata(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": self.name, "base_model": m.base_model, "reward": m.reward,
                "beta": m.beta, "atoms": m.atoms, "parameters": self.num_parameters,
                "native": getattr(self, "native_name", None) is not None}

    @torch.inference_mode()
    def last_logits(self, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Value-model logits at the last position of each context, float32 [B, V*K]."""
        if any(len(c) == 0 for c in contexts):
            raise ValueError("value model contexts must be non-empty")
        lengths = torch.tensor([len(c) for c in contexts])
        ids = torch.zeros(len(contexts), int(lengths.max()), dtype=torch.long)
        for i, c in enumerate(contexts):
            ids[i, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
        out = self.model(input_ids=ids.to(self.device), use_cache=False).logits
        return out[torch.arange(len(contexts)), lengths.to(self.device) - 1].float().cpu()

    async def q_values(self, contexts: Sequence[Sequence[int]], beta: float) -> torch.Tensor:
        """Q/beta's inputs for each context; the forward runs on this model's own worker
        thread (one, so its prefix cache is never used concurrently), never on the event
        loop: health checks and other requests go on while it runs."""
        if len(contexts) == 0:
            return torch.empty(0, self.vocab_size, dtype=torch.float64)
        for c in contexts:
            if len(c) == 0:
                raise ValueError("value model contexts must be non-empty")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._q_values_sync, contexts, beta)

    def _q_values_sync(self, contexts: Sequence[Sequence[int]], beta: float) -> torch.Tensor:
        logits = (self._prefix.last_logits(contexts) if self._prefix is not None
                  else self.last_logits(contexts))
        return q_from_logits(logits, beta, self.atoms).double()
