"""Summarizer: the Python API that ties loading, tokenizing and decoding together."""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from arxsum.decoding import GenerationOptions, SpecialTokens, beam_search, right_padded, search
from arxsum.errors import ModelLoadError, OptionsError
from arxsum.loading import load_model, resolve
from arxsum.options import DEFAULT_MODEL
from arxsum.tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Summary:
    text: str  # the decoded summary, exactly as the tokenizer decodes it (no clean-up)
    token_ids: list[int]  # generated ids as generate() returns them (decoder start token first)
    input_tokens: int  # tokens fed to the encoder, after truncation (specials included)
    original_tokens: int  # tokens before truncation
    truncated: bool


@dataclass
class Encoded:
    """One text's token ids after truncation (the tokenizer's own, so </s> stays last)."""

    ids: list[int]
    original_tokens: int

    @property
    def truncated(self) -> bool:
        return self.original_tokens > len(self.ids)


def input_token_limit(max_input_tokens: int | None, max_positions: int) -> int:
    """The truncation length to use: the one asked for, checked against the model's positions."""
    if max_input_tokens is None:
        return max_positions
    if max_input_tokens < 2:
        raise OptionsError(f"--max-input-tokens must be at least 2, got {max_input_tokens}")
    if max_input_tokens > max_positions:
        raise OptionsError(f"--max-input-tokens {max_input_tokens} is more than the model's "
                           f"{max_positions} positions")
    return max_input_tokens


def check_summary_length(options: GenerationOptions, decoder_positions: int) -> None:
    """A summary cannot be longer than the decoder's learned positions (BART's: max_position_embeddings,
    the start token counted): refused before any paper is read, not an index error at the first."""
    if options.max_length > decoder_positions:
        raise OptionsError(f"--max-length {options.max_length} is more than the model's {decoder_positions} "
                           "decoder positions")


def _to_stderr(message: str) -> None:
    print(f"arxsum: {message}", file=sys.stderr, flush=True)


def use_cpu_fast_paths(model, notify=None):
    """A model on CPU, in its final dtype: oneDNN-packed weights for the encoder's products (bfloat16)
    and the CPU kernels (cpukernels: compiled on first use; ARXSUM_CPU_KERNELS=0 or ARXSUM_CPU_ISA=none
    turns them off) for the phases where they beat torch on this machine (cpuplan: measured once,
    saying so through notify(message)). Each is skipped where it cannot run; the results do not
    depend on them beyond rounding. Returns the cpuplan.CpuPlan, or None without kernels."""
    from arxsum import cpukernels, cpuplan

    model.use_packed_weights()
    kernels = cpukernels.load()
    if kernels is None:
        model.use_float32_products(cpuplan.unmeasured_encoder_products() == "float32")
        return None
    try:
        plan = cpuplan.plan_for(model, kernels, notify)
    except ValueError as e:  # ARXSUM_CPU_PLAN misspelt
        raise OptionsError(str(e)) from None
    cpuplan.apply(model, kernels, plan)
    return plan


def pick_device(device: str) -> torch.device:
    """auto -> cuda:0 when present, else cpu; anything else as torch names it (cpu, cuda, cuda:1)."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise OptionsError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"device {device!r} asked for, but no CUDA GPU is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise OptionsError(f"device {device!r} does not exist ({torch.cuda.device_count()} GPUs)")
    if dev.type not in ("cpu", "cuda"):
        raise OptionsError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto is float32: the precision the reference summaries are defined in."""
    if dtype == "auto":
        return torch.float32
    if dtype not in DTYPES:
        raise OptionsError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if dtype == "float16" and device.type == "cpu":
        raise OptionsError("float16 is for GPUs; on the CPU use bfloat16 or float32")
    return DTYPES[dtype]


class Summarizer:
    """Load once, summarize many. `.model` is the nn.Module, `.tokenizer` an arxsum.tokenizer.Tokenizer."""

    def __init__(self, model, tokenizer, name: str, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.dtype = dtype
        self.cpu_plan = None
        c = model.config
        self.special = SpecialTokens(decoder_start=c.decoder_start_token_id, eos=c.eos_token_id,
                                     pad=c.pad_token_id, forced_bos=c.forced_bos_token_id,
                                     forced_eos=c.forced_eos_token_id)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MODEL, *, device: str = "auto",
                        dtype: str = "auto", notify=_to_stderr) -> Summarizer:
        """notify(message): what loading has to say (the one-time CPU measurement); None: nothing."""
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        directory = resolve(str(name_or_path))
        model = load_model(directory, dev, dt)
        plan = use_cpu_fast_paths(model, notify) if dev.type == "cpu" else None
        tokenizer = load_tokenizer(directory)
        if len(tokenizer) > model.config.vocab_size:
            raise ModelLoadError(f"the tokenizer has {len(tokenizer)} tokens but the model only "
                                 f"{model.config.vocab_size}")
        summarizer = cls(model, tokenizer, str(name_or_path), dev, dt)
        summarizer.cpu_plan = plan  # which CPU phases run on the kernels (cpuplan.CpuPlan), or None
        return summarizer

    @property
    def max_positions(self) -> int:
        """The most input tokens the model can take (16384 for the default model)."""
        return self.model.config.max_input_tokens

    @property
    def decoder_positions(self) -> int:
        """The longest summary the model can write, in tokens with the start token (max_length's limit)."""
        return self.model.config.max_position_embeddings

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def encode(self, text: str, max_input_tokens: int | None = None) -> Encoded:
        """Token ids, truncated by the tokenizer itself when longer than max_input_tokens."""
        limit = self.check_max_input_tokens(max_input_tokens)
        ids = self.tokenizer.encode(text)
        if len(ids) <= limit:
            return Encoded(ids, len(ids))
        return Encoded(self.tokenizer.encode(text, max_length=limit), len(ids))

    def check_max_input_tokens(self, max_input_tokens: int | None) -> int:
        return input_token_limit(max_input_tokens, self.max_positions)

    def generate(self, encoded: list[Encoded], options: GenerationOptions, on_step=None) -> list[list[int]]:
        """Beam search over one right-padded batch -> token ids per input, in input order."""
        check_summary_length(options, self.decoder_positions)
        ids, mask = self._padded(encoded)
        return beam_search(self.model, ids, mask, options, self.special, on_step=on_step)

    def _padded(self, encoded: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and attention mask (B, longest), on the model's device."""
        return right_padded([e.ids for e in encoded], self.special.pad, self.device)

    def summarize_stream(self, texts: Iterable[str], options: GenerationOptions = GenerationOptions(),
                         max_input_tokens: int | None = None, batch_size: int = 1,
                         on_step=None) -> Iterator[tuple[int, Summary]]:
        """(index in texts, Summary) as each summary is done: `batch_size` texts searched together,
        and when some finish while others still search, the next texts take their rows (continuous
        batching), so the batch stays full until the texts run out. Texts are read (and tokenized)
        only when a row is free for them. Each summary is the one the text gets alone (same tokens in
        float32). A text longer than the running batch's longest waits for the next batch (the texts
        behind it may join the running one)."""
        limit = self.check_max_input_tokens(max_input_tokens)
        check_summary_length(options, self.decoder_positions)
        waiting = _Waiting(enumerate(texts), lambda text: self.encode(text, limit))
        while batch := waiting.take(batch_size):
            members = list(batch)  # the search's document numbers: this batch's, then those that join

            def more(n: int, longest: int, members=members) -> list[torch.Tensor]:
                joining = waiting.take(n, longest)
                members.extend(joining)
                return [torch.tensor(e.ids) for _, e in joining]

            ids, mask = self._padded([e for _, e in batch])
            for doc, out in search(self.model, ids, mask, options, self.special, more=more, on_step=on_step):
                index, e = members[doc]
                yield index, Summary(self.decode(out), out, len(e.ids), e.original_tokens, e.truncated)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)

    def summarize_batch(self, texts: list[str], options: GenerationOptions = GenerationOptions(),
                        max_input_tokens: int | None = None, on_step=None) -> list[Summary]:
        """Summarize several texts in one padded batch; results in input order. on_step(length) is
        called after each decoding step (progress displays)."""
        encoded = [self.encode(t, max_input_tokens) for t in texts]
        outputs = self.generate(encoded, options, on_step=on_step)
        return [Summary(self.decode(out), out, len(e.ids), e.original_tokens, e.truncated)
                for e, out in zip(encoded, outputs)]

    def summarize(self, texts: str | list[str], *, batch_size: int = 1, max_input_tokens: int | None = None,
                  **options) -> list[str]:
        """Summaries of raw texts; options are GenerationOptions fields (num_beams, max_length, ...)."""
        if isinstance(texts, str):
            texts = [texts]
        known = {f.name for f in dataclasses.fields(GenerationOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionsError(f"unknown generation option(s): {', '.join(unknown)}")
        opts = GenerationOptions(**options)
        if batch_size < 1:
            raise OptionsError(f"batch_size must be at least 1, got {batch_size}")
        out = [""] * len(texts)
        for i, summary in self.summarize_stream(texts, opts, max_input_tokens, batch_size):
            out[i] = summary.text
        return out


class _Waiting:
    """Texts not yet searched, tokenized as they are first needed, handed out in their order."""

    def __init__(self, texts: Iterator[tuple[int, str]], encode: Callable[[str], Encoded]) -> None:
        self.texts, self.encode = texts, encode
        self.queue: deque[tuple[int, Encoded]] = deque()

    def take(self, n: int, longest: int | None = None) -> list[tuple[int, Encoded]]:
        """Up to n, in order, of at most `longest` tokens: a longer one stays for a later batch while
        those behind it go ahead, up to n of them waiting so (then the batch drains)."""
        out: list[tuple[int, Encoded]] = []
        kept: deque[tuple[int, Encoded]] = deque()
        while len(out) < n and len(kept) < max(n, 1):
            if not self.queue:
                nxt = next(self.texts, None)
                if nxt is None:
                    break
                self.queue.append((nxt[0], self.encode(nxt[1])))
            item = self.queue.popleft()
            (kept if longest is not None and len(item[1].ids) > longest else out).append(item)
        self.queue.extendleft(reversed(kept))
        return out
