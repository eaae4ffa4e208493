#!/usr/bin/env python
"""Build Tilt's bundled demo base language model from scratch, on CPU.

    apt-get install -y fortunes wordnet-base      # the corpus (Debian packages)
    .venv/bin/python scripts/build_demo_base.py   # writes tilt/assets/demo-base/

Pipeline (every random choice is seeded with --seed):

1. Corpus. Fortunes from Debian's ``fortunes``/``fortunes-min`` (the plain set in
   /usr/share/games/fortunes, never the offensive ``off/`` set, minus ``ascii-art``) and
   the quoted example sentences of WordNet glosses (Debian ``wordnet-base``,
   /usr/share/wordnet/data.{noun,verb,adj,adv}). Attributions ("-- Mark Twain") and
   layout whitespace are stripped, non-ASCII / art-like / very long documents dropped,
   exact duplicates (case- and space-insensitive) removed, then a seeded split into
   train / validation. A seeded fraction of training documents is also wrapped in the
   chat format of the chat template ("User: ...\\nAssistant: ...") so chat completions
   produce an answer-shaped continuation.
2. Tokenizer. Byte-level BPE (``tokenizers``) with one special token ``<|endoftext|>``
   (id 0) used as EOS, BOS and PAD; the tokenizer prepends it to every encoded text, and
   every training document is followed by it. Saved in Hugging Face format.
3. Model. ``LlamaForCausalLM`` with head_dim 64 (vLLM's CPU attention needs it), tied
   embeddings, trained on packed random windows of the token stream with AdamW and a
   linear-warmup cosine learning-rate schedule. Loss is the mean next-token cross-entropy
   L = -(1/T) sum_t log p(x_t | x_<t); validation perplexity is exp(L_val).
4. Card. MODEL_CARD.md with the numbers, sample generations, and the word list of the
   corpus (``corpus_words.txt.gz``) used by the tests to check that output is English.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
SKIP_FORTUNE_FILES = {"ascii-art"}  # pictures, not text
APT_HINT = "apt-get update && apt-get install -y fortunes wordnet-base"
EOS = "<|endoftext|>"
OUT_DEFAULT = Path(__file__).resolve().parents[1] / "tilt" / "assets" / "demo-base"
MANUAL_MARKER = "<!-- manual notes below: kept when the script rewrites this card -->"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
FORTUNE_PROMPTS = ("Tell me a fortune.", "Say something wise.", "Tell me a joke.",
                   "What do you think?", "Any advice?")
SAMPLE_PROMPTS = ("The", "A good friend", "Life is", "The computer", "I can breathe")


# ----------------------------------------------------------------------------- corpus

def check_corpus_installed() -> None:
    """Exit with status 2 and the apt command when the corpus packages are missing."""
    missing = []
    if not (FORTUNE_DIR / "fortunes").exists() or not (FORTUNE_DIR / "people").exists():
        missing.append("fortunes (expected files in /usr/share/games/fortunes)")
    if not all((WORDNET_DIR / f).exists() for f in WORDNET_FILES):
        missing.append("wordnet-base (expected /usr/share/wordnet/data.noun etc.)")
    if missing:
        print("error: corpus packages not installed: " + "; ".join(missing), file=sys.stderr)
        print(f"install them with:  {APT_HINT}   (as root / with sudo)", file=sys.stderr)
        sys.exit(2)


def clean_whitespace(text: str) -> str:
    """Collapse all runs of whitespace (layout, tabs, line breaks) to one space."""
    return re.sub(r"\s+", " ", text).strip()


def is_plain_english(text: str) -> bool:
    """Printable ASCII, mostly letters and spaces (drops ASCII art, code, tables)."""
    if not text.isascii() or not text.isprintable():
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters >= 0.8 * len(text) and "  " not in text


def clean_fortune(raw: str) -> str | None:
    """Cut the attribution ("-- Author", indented) and layout; None if unusable."""
    lines = []
    for line in raw.splitlines():
        if re.match(r"^\s*--\s*\S", line) or re.match(r"^\s{2,}-\s?[A-Z]", line):
            break  # attribution starts; anything after it is source noise
        lines.append(line)
    text = clean_whitespace("\n".join(lines))
    if not 8 <= len(text) <= 600 or not is_plain_english(text):
        return None
    return text


def read_fortunes() -> list[str]:
    """All cleaned fortunes of the plain (non-offensive) set, in file order."""
    docs = []
    for path in sorted(FORTUNE_DIR.iterdir()):
        if not path.is_file() or path.suffix or path.name in SKIP_FORTUNE_FILES:
            continue  # skip .dat/.u8 indexes and the art file
        raw = path.read_text(encoding="latin-1")
        for chunk in re.split(r"^%\s*$", raw, flags=re.M):
            text = clean_fortune(chunk)
            if text:
                docs.append(text)
    return docs


def read_wordnet_examples() -> list[tuple[str, str]]:
    """(lemma, example sentence) pairs from the quoted examples of WordNet glosses."""
    pairs = []
    for name in WORDNET_FILES:
        for line in (WORDNET_DIR / name).read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # license header
            head, gloss = line.split(" | ", 1)
            lemma = head.split()[4].replace("_", " ")
            lemma = re.sub(r"\(.*\)$", "", lemma)  # adjective markers like (a)
            for example in re.findall(r'"([^"]+)"', gloss):
                text = clean_whitespace(example)
                if len(text.split()) >= 3 and is_plain_english(text):
                    pairs.append((lemma, text))
    return pairs


def dedupe(items: list, key) -> list:
    """Keep the first item of each group whose normalised key (lowercase, spaces) is equal."""
    seen, out = set(), []
    for item in items:
        k = clean_whitespace(key(item).lower())
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def chat(user: str, answer: str) -> str:
    """A document in the chat template's format (without the BOS/EOS added later)."""
    return f"User: {user}\nAssistant: {answer}"


def build_corpus(seed: int, val_fraction: float, chat_fraction: float) -> dict:
    """Cleaned, deduplicated train/validation documents plus seeded chat-format copies."""
    rng = random.Random(seed)
    fortunes = dedupe(read_fortunes(), key=lambda s: s)
    examples = dedupe(read_wordnet_examples(), key=lambda p: p[1])
    tagged = [("fortune", f, None) for f in fortunes] + [("wordnet", s, w) for w, s in examples]
    rng.shuffle(tagged)
    n_val = int(len(tagged) * val_fraction)
    val, train = tagged[:n_val], tagged[n_val:]
    train_docs = [text for _, text, _ in train]
    for kind, text, lemma in train:
        if rng.random() < chat_fraction:
            user = (rng.choice(FORTUNE_PROMPTS) if kind == "fortune"
                    else f'Use the word "{lemma}" in a sentence.')
            train_docs.append(chat(user, text))
    rng.shuffle(train_docs)
    return {"train": train_docs, "val": [text for _, text, _ in val],
            "n_fortunes": len(fortunes), "n_wordnet": len(examples)}


def corpus_words(docs: list[str], min_count: int = 2) -> list[str]:
    """Lowercase alphabetic words seen at least min_count times in the documents."""
    counts = Counter(w for d in docs for w in re.findall(r"[a-z]+", d.lower()))
    return sorted(w for w, c in counts.items() if c >= min_count)


# -------------------------------------------------------------------------- tokenizer

def train_tokenizer(docs: list[str], vocab_size: int):
    """Byte-level BPE with <|endoftext|> (id 0) prepended to every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, 0)])
    assert tok.token_to_id(EOS) == 0
    return tok


def save_hf_tokenizer(tok, out: Path, max_len: int):
    """Save tokenizer.json + tokenizer_config.json (+ chat template) for AutoTokenizer/vLLM."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None,
        model_max_length=max_len, clean_up_tokenization_spaces=False)
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    # Portable config: transformers 4.x and 5.x both know this class name, and 4.x reads
    # the chat template from tokenizer_config.json (5.x also writes chat_template.jinja).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE)
    cfg.pop("backend", None)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return hf


def encode_stream(tok, docs: list[str]):
    """One token stream: EOS doc EOS doc ... EOS (each document preceded and ended by EOS)."""
    import torch

    ids = [0]
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long)


# ------------------------------------------------------------------------------ model

def make_model(vocab_size: int, args):
    """Llama decoder with head_dim = hidden / heads = 64 and tied input/output embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, head_dim=args.hidden // args.heads,
        max_position_embeddings=args.max_len, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        torch_dtype="float32")
    assert config.head_dim == 64, "vLLM's CPU attention needs head_dim 64"
    return LlamaForCausalLM(config)


def lr_at(step: int, args) -> float:
    """Linear warm-up to lr over `warmup` steps, then cosine decay to lr/10 at `steps`."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def random_batch(stream, batch: int, seq: int, gen):
    """`batch` random windows of seq+1 tokens: inputs x[:, :-1], targets x[:, 1:]."""
    import torch

    starts = torch.randint(0, len(stream) - seq - 1, (batch,), generator=gen)
    return torch.stack([stream[s:s + seq + 1] for s in starts])


def evaluate(model, stream, seq: int, batch: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over consecutive non-overlapping windows."""
    import torch

    n = (len(stream) - 1) // seq
    windows = torch.stack([stream[i * seq:i * seq + seq + 1] for i in range(n)])
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            w = windows[i:i + batch]
            logits = model(input_ids=w[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="sum")
            total += loss.item()
            count += w[:, 1:].numel()
    model.train()
    return total / count


def train(model, train_stream, val_stream, args) -> dict:
    """AdamW (weight decay on matrices only) + cosine schedule + grad-norm clip 1.0."""
    import torch
    from tqdm import tqdm

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    bar = tqdm(range(args.steps), desc="train", unit="step", dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        x = random_batch(train_stream, args.batch, args.seq, gen)
        loss = _lm_loss(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step, args):.2e}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val = evaluate(model, val_stream, args.seq)
            history.append({"step": step + 1, "train_loss": loss.item(), "val_loss": val})
            bar.write(f"step {step + 1}: train loss {loss.item():.3f}  val loss {val:.3f}"
                      f"  val ppl {math.exp(val):.1f}")
    return {"history": history, "val_loss": history[-1]["val_loss"]}


def _lm_loss(model, x):
    """Cross-entropy of predicting x[:, t+1] from x[:, :t+1], averaged over all positions."""
    import torch

    logits = model(input_ids=x[:, :-1]).logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))


# ------------------------------------------------------------------------------- card

def sample_generations(model, hf_tok, seed: int) -> list[dict]:
    """Greedy and seeded-sampled (T=0.8, top-p 0.95) continuations of a few prompts."""
    import torch

    model.eval()
    out = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        ids = hf_tok(prompt, return_tensors="pt").input_ids
        torch.manual_seed(seed + i)
        sampled = model.generate(ids, max_new_tokens=40, do_sample=True, temperature=0.8,
                                 top_p=0.95, pad_token_id=0)
        greedy = model.generate(ids, max_new_tokens=30, do_sample=False, pad_token_id=0)
        out.append({"prompt": prompt,
                    "sampled": hf_tok.decode(sampled[0], skip_special_tokens=True),
                    "greedy": hf_tok.decode(greedy[0], skip_special_tokens=True)})
    return out


def dir_size(path: Path) -> int:
    """Total bytes of the files under path."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_card(out: Path, stats: dict) -> None:
    """MODEL_CARD.md from the build statistics; keeps any hand-written tail after the marker."""
    card = out / "MODEL_CARD.md"
    manual = ""
    if card.exists() and MANUAL_MARKER in card.read_text():
        manual = card.read_text().split(MANUAL_MARKER, 1)[1]
    s = stats
    samples = "\n".join(
        f"- prompt `{g['prompt']}`\n  - sampled: {json.dumps(g['sampled'])}\n"
        f"  - greedy: {json.dumps(g['greedy'])}" for g in s["samples"])
    hist = "\n".join(f"| {h['step']} | {h['train_loss']:.3f} | {h['val_loss']:.3f} | "
                     f"{math.exp(h['val_loss']):.1f} |" for h in s["history"])
    a = s["args"]
    text = f"""# Tilt demo base model (`tilt/assets/demo-base`)

A tiny English causal LM trained from scratch on CPU; the embedded default model of
`tilt serve`. It writes English-looking, fortune-cookie-flavoured text. It is a demo:
no knowledge, no instruction following beyond the `User:`/`Assistant:` shape.

## Build (reproducible)

```
apt-get update && apt-get install -y fortunes wordnet-base
{s['command']}
```

Build wall time: {s['wall_s'] / 60:.1f} min on {s['threads']} CPU threads
(torch {s['torch']}, transformers {s['transformers']}, tokenizers {s['tokenizers']}).

## Corpus

- Debian `fortunes` + `fortunes-min` (plain set in /usr/share/games/fortunes, not the
  offensive `off/` set; `ascii-art` skipped): {s['n_fortunes']} fortunes after cleaning.
- Debian `wordnet-base`: the quoted example sentences in the glosses of
  /usr/share/wordnet/data.{{noun,verb,adj,adv}}: {s['n_wordnet']} sentences after cleaning.
- Cleaning: attributions (`-- Author`) cut, whitespace collapsed, non-ASCII, art-like
  (<80% letters/spaces) and >600-character documents dropped, case/space-insensitive
  exact duplicates removed. Seeded split: {s['n_train_raw']} train / {s['n_val']} validation
  documents; plus {s['n_chat']} chat-format copies of training documents
  (`User: Use the word "X" in a sentence.\\nAssistant: <example>`, `User: Tell me a
  fortune.\\nAssistant: <fortune>`, ...). Train stream {s['train_tokens']:,} tokens,
  validation stream {s['val_tokens']:,} tokens.
- `corpus_words.txt.gz`: the {s['n_words']:,} lowercase words seen at least twice in the
  training documents (used by tests/engines/test_demo_base_model.py).

## Tokenizer (shared with the demo value model)

Byte-level BPE (`tokenizers`), vocabulary {s['vocab_size']} including one special token
`<|endoftext|>` = id 0, which is EOS, BOS and PAD. Encoding with special tokens prepends
it (training documents were `<|endoftext|> text <|endoftext|>`, packed). Chat template:
`<|endoftext|>User: ...\\nAssistant:` (assistant turns end with `<|endoftext|>`).

Files: `tokenizer.json`, `tokenizer_config.json` (AutoTokenizer loads them offline).
To reuse for a value model (issue 5), copy these two files into the value model's
directory, or `AutoTokenizer.from_pretrained("tilt/assets/demo-base")` and
`save_pretrained(value_dir)`; keep `vocab_size={s['vocab_size']}`, `eos/bos/pad_token_id=0`.
SHA-256 of `tokenizer.json`: `{s['tokenizer_sha256']}`.

## Model

`LlamaForCausalLM`: hidden {a['hidden']}, {a['layers']} layers, {a['heads']} heads
(head_dim 64, needed by vLLM's CPU attention), MLP {a['intermediate']}, RoPE, RMSNorm,
tied embeddings, max_position_embeddings {a['max_len']}, fp32 safetensors.
Parameters: {s['params']:,}. Directory size: {s['size_bytes'] / 1e6:.1f} MB.

Training: seed {a['seed']}, {a['steps']} steps of {a['batch']} random windows x {a['seq']}
tokens ({a['steps'] * a['batch'] * a['seq']:,} tokens), AdamW (betas 0.9/0.95, weight decay
0.1 on matrices), lr {a['lr']} with {a['warmup']} warm-up steps then cosine to lr/10,
grad-norm clip 1.0, torch.set_num_threads({s['threads']}).

**Validation loss {s['val_loss']:.3f} nats/token, perplexity {math.exp(s['val_loss']):.1f}.**

| step | train loss | val loss | val ppl |
|---|---|---|---|
{hist}

## Samples (transformers, from the build)

{samples}

{MANUAL_MARKER}{manual}"""
    card.write_text(text)


# ------------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT_DEFAULT)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=80)
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--chat-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; use 1 when other jobs share a 2-core machine")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_corpus_installed()
    import hashlib

    import tokenizers
    import torch
    import transformers

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    print("1/4 corpus ...", flush=True)
    corpus = build_corpus(args.seed, args.val_fraction, args.chat_fraction)
    print(f"    {corpus['n_fortunes']} fortunes, {corpus['n_wordnet']} WordNet examples; "
          f"{len(corpus['train'])} train docs, {len(corpus['val'])} val docs")
    words = corpus_words(corpus["train"])
    with gzip.open(args.out / "corpus_words.txt.gz", "wt") as f:
        f.write("\n".join(words) + "\n")

    print("2/4 tokenizer ...", flush=True)
    tok = train_tokenizer(corpus["train"], args.vocab_size)
    hf_tok = save_hf_tokenizer(tok, args.out, args.max_len)
    train_stream = encode_stream(tok, corpus["train"])
    val_stream = encode_stream(tok, corpus["val"])
    print(f"    vocab {tok.get_vocab_size()}, train {len(train_stream):,} tokens, "
          f"val {len(val_stream):,} tokens")

    print("3/4 model ...", flush=True)
    model = make_model(tok.get_vocab_size(), args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"    {n_params:,} parameters")
    result = train(model, train_stream, val_stream, args)
    model.generation_config.update(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model.save_pretrained(args.out, safe_serialization=True)

    print("4/4 samples and card ...", flush=True)
    samples = sample_generations(model, hf_tok, args.seed)
    for g in samples:
        print(f"    {g['sampled']!r}")
    stats = {
        "args": vars(args) | {"out": str(args.out)}, "samples": samples, **result,
        "n_fortunes": corpus["n_fortunes"], "n_wordnet": corpus["n_wordnet"],
        "n_train_raw": sum(not d.startswith("User: ") for d in corpus["train"]),
        "n_chat": sum(d.startswith("User: ") for d in corpus["train"]),
        "n_val": len(corpus["val"]), "train_tokens": len(train_stream),
        "val_tokens": len(val_stream), "n_words": len(words),
        "vocab_size": tok.get_vocab_size(), "params": n_params,
        "tokenizer_sha256": hashlib.sha256((args.out / "tokenizer.json").read_bytes()).hexdigest(),
        "threads": args.threads, "torch": torch.__version__,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "wall_s": time.time() - t0,
        "command": " ".join([".venv/bin/python scripts/build_demo_base.py", *sys.argv[1:]]),
    }
    stats["size_bytes"] = dir_size(args.out)
    write_card(args.out, stats)
    (args.out / "build_stats.json").write_text(json.dumps(
        {k: v for k, v in stats.items() if k != "samples"}, indent=1, default=str))
    print(f"done in {stats['wall_s'] / 60:.1f} min: val loss {result['val_loss']:.3f} "
          f"(ppl {math.exp(result['val_loss']):.1f}), {n_params:,} params, "
          f"{stats['size_bytes'] / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
