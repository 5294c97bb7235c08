"""The checkpoint's byte-level BPE tokenizer, run by the `tokenizers` library directly.

transformers' fast BART tokenizer wraps a `tokenizers.Tokenizer`; for what arxsum asks of it (ids
framed by <s> ... </s>, truncation that keeps </s> last, decoding without the special tokens and
without clean-up) it calls that object and adds nothing. Calling it ourselves gives the same ids and
text (tests/test_parity.py compares them with transformers 4.40.2, the seed pipeline's) and spares
importing transformers, 0.8 s at every start. Nothing here imports torch either: `arxsum extract`
counts tokens with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from arxsum.errors import ModelLoadError, describe

# BART's special tokens, where a checkpoint's tokenizer_config.json / special_tokens_map.json name none.
SPECIAL_DEFAULTS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


class Tokenizer:
    """ids <-> text with one `tokenizers.Tokenizer` (`backend`), as transformers' BartTokenizerFast runs it."""

    def __init__(self, backend) -> None:
        backend.no_truncation()  # per call, as transformers sets it (a tokenizer.json may carry its own)
        backend.no_padding()
        self.backend = backend

    def __len__(self) -> int:
        """Every id the tokenizer can produce: its vocabulary and added tokens."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """<s> ... </s>; with max_length, cut on the right to max_length ids, </s> kept last."""
        if max_length is None:
            return self.backend.encode(text).ids
        self.backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        try:
            return self.backend.encode(text).ids
        finally:
            self.backend.no_truncation()

    def decode(self, ids: list[int]) -> str:
        """The text without special tokens and without clean-up (the seed pipeline's decode)."""
        return self.backend.decode(ids, skip_special_tokens=True)


def load_tokenizer(directory: Path) -> Tokenizer:
    """From tokenizer.json, else from vocab.json + merges.txt (built as transformers converts them)."""
    from tokenizers import Tokenizer as Backend

    config = _read_json(directory / "tokenizer_config.json")
    prefix = bool(config.get("add_prefix_space", False))
    try:
        special = _special_tokens(directory, config)
        if (directory / "tokenizer.json").is_file():
            backend = Backend.from_file(str(directory / "tokenizer.json"))
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            backend = _from_vocab_and_merges(directory, special, prefix)
        else:
            raise ModelLoadError(f"{directory} has no tokenizer files (tokenizer.json or vocab.json + merges.txt)")
        _set_prefix_space(backend, prefix, bool(config.get("trim_offsets", True)))
        _add_missing_special_tokens(backend, special)
    except ModelLoadError:
        raise
    except Exception as e:  # tokenizers raises plain Exceptions on malformed files
        raise ModelLoadError(f"cannot load the tokenizer in {directory}: {describe(e)}") from None
    return Tokenizer(backend)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    return raw if isinstance(raw, dict) else {}


def _special_tokens(directory: Path, config: dict) -> dict[str, dict]:
    """Each special token's content and flags: special_tokens_map.json over tokenizer_config.json over BART's."""
    found = dict(SPECIAL_DEFAULTS) | {k: v for k, v in config.items() if k in SPECIAL_DEFAULTS and v}
    found |= {k: v for k, v in _read_json(directory / "special_tokens_map.json").items() if k in SPECIAL_DEFAULTS}
    tokens = {}
    for name, value in found.items():
        token = {"content": value} if isinstance(value, str) else dict(value)
        token.setdefault("lstrip", name == "mask_token")  # BART's mask token eats the space before it
        tokens[name] = token
    return tokens


def _from_vocab_and_merges(directory: Path, special: dict[str, dict], prefix: bool):
    """transformers' RobertaConverter (what BartTokenizerFast runs on these files); the special tokens
    are registered by load_tokenizer, as for tokenizer.json."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = BPE.read_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    backend = Tokenizer(BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                            fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    backend.decoder = decoders.ByteLevel()
    sep, cls = special["sep_token"]["content"], special["cls_token"]["content"]
    missing = [t for t in (sep, cls) if t not in vocab]
    if missing:
        raise ModelLoadError(f"{directory / 'vocab.json'} lacks the special token(s) {', '.join(missing)}")
    backend.post_processor = processors.RobertaProcessing((sep, vocab[sep]), (cls, vocab[cls]),
                                                          trim_offsets=True, add_prefix_space=prefix)
    return backend


def _add_missing_special_tokens(backend, special: dict[str, dict]) -> None:
    """Register the special tokens the backend does not know as such (vocab + merges never do), as
    transformers does on loading: only then are they matched whole in a text and skipped in decoding."""
    from tokenizers import AddedToken

    known = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
    missing, seen = [], set()
    for t in special.values():
        if t["content"] not in known and t["content"] not in seen:
            seen.add(t["content"])
            missing.append(AddedToken(t["content"], lstrip=bool(t["lstrip"]), rstrip=bool(t.get("rstrip", False)),
                                      single_word=bool(t.get("single_word", False)),
                                      normalized=bool(t.get("normalized", True)), special=True))
    if missing:
        backend.add_special_tokens(missing)


def _set_prefix_space(backend, add_prefix_space: bool, trim_offsets: bool) -> None:
    """BartTokenizerFast makes the pre-tokenizer and post-processor agree with tokenizer_config.json's
    add_prefix_space (default False) and trim_offsets (default True), whatever tokenizer.json says."""
    from tokenizers import pre_tokenizers, processors

    state = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
    if state.get("add_prefix_space", add_prefix_space) != add_prefix_space:
        kind = getattr(pre_tokenizers, state.pop("type"))
        state["add_prefix_space"] = add_prefix_space
        backend.pre_tokenizer = kind(**state)
    state = json.loads(backend.post_processor.__getstate__()) if backend.post_processor is not None else {}
    if state.get("type") == "RobertaProcessing" and (state["add_prefix_space"] != add_prefix_space
                                                    or state["trim_offsets"] != trim_offsets):
        backend.post_processor = processors.RobertaProcessing(tuple(state["sep"]), tuple(state["cls"]),
                                                              trim_offsets=trim_offsets,
                                                              add_prefix_space=add_prefix_space)
