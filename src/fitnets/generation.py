"""Text from a language-model run: ``fitnets generate RUN_DIR "prompt"`` and
``fitnets.generate(RUN_DIR, prompt)``.

The run's weights (``RUN_DIR/model.pt``: the best validation epoch's, as its summary says)
and its tokenizer (``byte``, or the Hugging Face tokenizer folder the run recorded) are
loaded; an export folder (``fitnets export RUN_DIR``) works the same, from its own copy of
the tokenizer. The prompt is encoded and N tokens are sampled one at a time, each from the
logits of the last position given at most ``context`` tokens (the model's block size: a
longer text is cropped to its last ``context`` tokens):

- ``temperature=0``: greedy, the most likely token (deterministic);
- ``temperature>0``: from softmax(logits / temperature), optionally among the ``top_k``
  most likely tokens only, drawn by a generator seeded with ``seed`` (the same seed, the
  same text; no seed: a fresh draw each call).

No key/value cache: every step runs the (cropped) sequence again, which is fine for the
small models this package trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from fitnets.errors import FitnetsError

NEEDS = ("fitnets generate needs a language-model run: one trained with data.name=text "
         "(e.g. fitnets train recipes/text-gpt-teacher-short.yaml), or its export folder")


@dataclass
class Generation:
    """What ``generate`` gives back."""

    text: str  # prompt + continuation, as the command prints it
    prompt: str
    continuation: str  # the new tokens decoded
    ids: list[int]  # the new token ids
    prompt_ids: list[int]


@dataclass
class LanguageModel:
    """A trained language model ready to sample from: the network (eval mode, CPU), its
    tokenizer and its context (the most tokens it sees at once)."""

    model: nn.Module
    tokenizer: object  # fitnets.data.text.ByteTokenizer or HFTokenizer
    context: int
    source: Path


MASKED = ("'{path}' is a masked language model (BERT-style): it fills in masked tokens "
          "from both sides, it does not continue text, so it has nothing to generate. "
          "Generate with a causal LM's run (gpt, hf:DIR of a *ForCausalLM).")


def load_language_model(path: str | Path) -> LanguageModel:
    """The network and tokenizer of a finished language-model run directory, or of the
    folder ``fitnets export`` wrote for one. Refuses anything else, saying what it is."""
    from fitnets.models import load_run_model

    path = Path(path)
    if not path.exists():
        raise FitnetsError(f"'{path}' does not exist; {NEEDS}.")
    if not path.is_dir():
        raise FitnetsError(f"'{path}' is a file, not a run directory; {NEEDS}.")
    if (path / "export.json").is_file():
        from fitnets.export import load_exported, load_exported_tokenizer

        tokenizer = load_exported_tokenizer(path)  # refuses an image classifier's export
        model, _ = load_exported(path)
        config = json.loads((path / "config.json").read_text())
        if config.get("task") == "masked-lm":
            raise FitnetsError(MASKED.format(path=path))
        return LanguageModel(model, tokenizer, int(config["context"]), path)
    if not (path / "model.pt").is_file():
        what = ("a run that has not finished (no model.pt yet; continue it with "
                f"--resume {path})" if (path / "config.yaml").is_file()
                else "not a run directory (no model.pt)")
        raise FitnetsError(f"'{path}' is {what}; {NEEDS}.")
    model, bundle = load_run_model(path)
    if bundle.get("tokenizer") is None:
        raise FitnetsError(f"'{path}' holds {_describe(path, bundle)}, not a language model; "
                           f"{NEEDS}.")
    if bundle.get("objective") == "masked" or getattr(model, "objective", "") == "masked":
        raise FitnetsError(MASKED.format(path=path))
    tokenizer = _run_tokenizer(path, bundle["tokenizer"])
    context = int((getattr(model, "sizes", None) or {}).get("context")
                  or bundle["input_shape"][0])
    return LanguageModel(model, tokenizer, context, path)


def _describe(path: Path, bundle: dict) -> str:
    """"resnet20 trained on cifar10 (an image classifier: 10 classes, input 3x32x32)"."""
    dataset = "?"
    try:
        dataset = (yaml.safe_load((path / "config.yaml").read_text()) or {})["data"]["name"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        pass
    shape = "x".join(str(s) for s in bundle.get("input_shape", []))
    return (f"{bundle.get('model', '?')} trained on {dataset} (an image classifier: "
            f"{bundle.get('num_classes', '?')} classes, input {shape})")


def _run_tokenizer(path: Path, spec: str):
    """The tokenizer a run recorded: ``byte``, or its Hugging Face folder (absolute)."""
    from fitnets.data.text import make_tokenizer

    if spec != "byte" and not Path(spec).is_dir():
        raise FitnetsError(
            f"the tokenizer of '{path}' was the Hugging Face folder '{spec}' (its model.pt "
            "records it, as config.yaml's data.tokenizer), which is no longer there: put it "
            "back, or generate from an export of the run (fitnets export copies the "
            "tokenizer into the export folder).")
    return make_tokenizer(spec)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return getattr(out, "logits", out)  # a Hugging Face output object, or the tensor


@torch.no_grad()
def sample(model: nn.Module, prompt_ids: list[int], tokens: int, context: int,
           temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> list[int]:
    """``tokens`` new ids after ``prompt_ids``, each from the logits of the last position of
    the sequence so far cropped to its last ``context`` ids (see the module's docstring)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    seq = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    for _ in range(tokens):
        logits = _logits(model, seq[:, -context:])[:, -1, :].float()
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[0, len(prompt_ids):].tolist()


def generate(run_dir: str | Path | LanguageModel, prompt: str, *, tokens: int = 200,
             temperature: float = 1.0, top_k: int | None = None,
             seed: int | None = None) -> Generation:
    """Continue ``prompt`` with ``tokens`` tokens sampled from a language-model run (its
    directory or export folder, or a ``LanguageModel`` already loaded), like
    ``fitnets generate``::

        import fitnets

        out = fitnets.generate("runs/text-teacher", "def main(", tokens=100, temperature=0)
        print(out.text)

    ``temperature=0`` is greedy; otherwise ``top_k`` keeps the k most likely tokens and
    ``seed`` makes the draw repeatable."""
    if not isinstance(prompt, str) or not prompt:
        raise FitnetsError("the prompt is empty: give the text to continue, e.g. "
                           "fitnets generate RUN_DIR \"def main(\".")
    if not isinstance(tokens, int) or tokens < 0:
        raise FitnetsError(f"tokens must be a whole number >= 0, got {tokens!r}.")
    if temperature < 0:
        raise FitnetsError(f"temperature must be >= 0 (0: greedy), got {temperature}.")
    if top_k is not None and top_k < 1:
        raise FitnetsError(f"top_k must be >= 1 (or left out: every token), got {top_k}.")
    lm = run_dir if isinstance(run_dir, LanguageModel) else load_language_model(run_dir)
    prompt_ids = list(lm.tokenizer.encode(prompt))
    if not prompt_ids:
        raise FitnetsError(f"the prompt {prompt!r} encodes to no tokens; give some text.")
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    ids = sample(lm.model, prompt_ids, tokens, lm.context, temperature, top_k, generator)
    # decoded with the prompt: a tokenizer that merges across the seam (a leading space)
    full, head = lm.tokenizer.decode(prompt_ids + ids), lm.tokenizer.decode(prompt_ids)
    continuation = full[len(head):] if full.startswith(head) else lm.tokenizer.decode(ids)
    return Generation(prompt + continuation, prompt, continuation, ids, prompt_ids)
