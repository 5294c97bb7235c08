"""Beam search of our own, equal to transformers 4.40.2 `generate()` for the options below."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from arxsum.cpukernels import reusing_freed_memory
from arxsum.model import AncestryCache
from arxsum.options import GenerationOptions  # defined without torch, for the CLI's start-up


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids that generate() takes from the checkpoint's config.json (and nothing else does)."""

    decoder_start: int
    eos: int
    pad: int
    forced_bos: int | None = None
    forced_eos: int | None = None


# ---- logit processors: (rows, vocab) log-probs, in transformers 4.40.2's order ---------------------

def ban_repeated_ngrams(scores: torch.Tensor, sequences: list[list[int]], n: int) -> None:
    """NoRepeatNGramLogitsProcessor: forbid any token that would repeat an n-gram of the row."""
    for row, seq in enumerate(sequences):
        cur = len(seq)
        if cur + 1 < n:
            continue
        prefix = seq[cur + 1 - n:] if n > 1 else []
        banned = {seq[i + n - 1] for i in range(cur - n + 1) if seq[i: i + n - 1] == prefix}
        if banned:
            scores[row, list(banned)] = -math.inf


def process_logits(scores: torch.Tensor, sequences: list[list[int]], options: GenerationOptions,
                   special: SpecialTokens) -> torch.Tensor:
    """Apply n-gram blocking, min length, forced BOS and forced EOS, in place; lengths count the
    decoder start token, as `input_ids.shape[-1]` does in transformers. Each row by its own length:
    with continuous batching the documents of a batch are at different steps."""
    lengths = [len(seq) for seq in sequences]
    if options.no_repeat_ngram_size > 0:
        ban_repeated_ngrams(scores, sequences, options.no_repeat_ngram_size)
    short = _rows(lengths, lambda n: n < options.min_length)
    if short:
        scores[short, special.eos] = -math.inf
    for forced, at in ((special.forced_bos, 1), (special.forced_eos, options.max_length - 1)):
        rows = _rows(lengths, lambda n, at=at: n == at) if forced is not None else []
        if rows:
            scores[rows] = -math.inf
            scores[rows, forced] = 0
    return scores


def _rows(lengths: list[int], which) -> list[int] | slice:
    """The rows whose length satisfies `which`: a slice for all of them (the usual case, one write)."""
    rows = [r for r, n in enumerate(lengths) if which(n)]
    return slice(None) if len(rows) == len(lengths) else rows


# ---- finished hypotheses and their ranking ---------------------------------------------------------

class Hypotheses:
    """The n best finished sequences of one document (transformers' BeamHypotheses, same tie rules)."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.beams: list[tuple[float, list[int]]] = []
        self.worst_score = 1e9

    def add(self, tokens: list[int], sum_logprobs: float, generated_len: int) -> None:
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.worst_score >= best_sum_logprobs / (cur_len - 1) ** self.length_penalty

    def best(self) -> list[int]:
        return sorted(self.beams, key=lambda b: b[0])[-1][1]


# ---- the decoder's state across steps --------------------------------------------------------------

class DecoderState:
    """Owns everything that lives across steps: cross-attention keys/values (one copy per document,
    shared by its beams) and the preallocated self-attention caches (one row per beam).

    Reordering the beams: with the CPU kernels (every decoder layer has them), the caches stay put
    and an ancestry table says where each row's history lies (model.AncestryCache); otherwise the
    caches are copied, in the new order, into a spare set of buffers.

    Each row has its own position: a document that takes the rows of a finished one (`refill`,
    continuous batching) starts again at 0 while the others go on."""

    follows_ancestry = True  # where the model's kernels allow it

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
                 max_length: int):
        with _encoding(input_ids.device):
            enc = model.encode(input_ids, attention_mask)
        self._begin(model, enc, num_beams, max_length)

    @classmethod
    def from_encoding(cls, model, enc, num_beams: int, max_length: int) -> DecoderState:
        """The state for an encoder output already at hand (enc: model.EncoderOutput, B documents):
        what cpuplan times decoding steps on, without an encoder pass."""
        state = cls.__new__(cls)
        state._begin(model, enc, num_beams, max_length)
        return state

    def _begin(self, model, enc, num_beams: int, max_length: int) -> None:
        self.model = model
        self.num_beams = num_beams
        rows = enc.hidden.shape[0] * num_beams
        self.cross = model.cross_kv(enc.hidden)  # per layer: keys, values (see DecoderLayer.forward)
        self.cross_mask = model.cross_mask(enc)  # (B, 1, 1, S)
        del enc
        self.caches = model.new_caches(rows, max_length)  # per layer: (max_len, N, H, hd)
        self.positions = [0] * rows  # each row's next position
        self.length = 0  # positions filled in the caches, at most (the largest of self.positions)
        if self.follows_ancestry and all(layer.fused is not None for layer in model.model.decoder.layers):
            # zeros: a row that starts later reads, unused, the entries below other rows' positions
            self.ancestry = torch.zeros(max_length, rows, dtype=torch.long, device=self.cross_mask.device)
            self.spare = None
        else:
            self.ancestry = None
            self.spare = model.new_caches(rows, max_length)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N,) at each row's position -> log-probs (N, vocab) in float32."""
        caches = self.caches
        first = self.positions[0]
        device = tokens.device
        start = first if all(p == first for p in self.positions) else torch.tensor(self.positions, device=device)
        if self.ancestry is not None:  # each row writes its own slot at its new position
            rows = torch.arange(self.ancestry.shape[1], device=device)
            self.ancestry[start if isinstance(start, int) else (start, rows)] = rows
            caches = [AncestryCache(k, v, self.ancestry) for k, v in caches]
        hidden = self.model.decode(tokens[:, None], self.cross, self.cross_mask, caches, start)
        self.positions = [p + 1 for p in self.positions]
        self.length = max(self.positions)
        return self.model.log_probs(hidden[:, -1])

    def refill(self, blocks: list[int], enc) -> None:
        """The documents at these row blocks (of num_beams rows each, in the search's order) have
        finished; the documents of `enc` (model.EncoderOutput, len(blocks) documents, S' <= S
        positions) take their rows, from position 0."""
        self._take(torch.tensor(blocks, device=self.cross_mask.device), enc)
        for b in blocks:
            self.positions[b * self.num_beams: (b + 1) * self.num_beams] = [0] * self.num_beams

    def _take(self, docs: torch.Tensor, enc) -> None:
        """Document slots `docs` (of the cross-attention keys and values) get those of `enc`."""
        hidden, mask = _padded_to(enc, self.cross_mask.shape[-1])
        fresh = self.model.cross_kv(hidden)
        for (k, v), (fk, fv) in zip(self.cross, fresh):
            k.index_copy_(0, docs, fk)
            v.index_copy_(0, docs, fv)
        self.cross_mask.index_copy_(0, docs, self.model.cross_mask(type(enc)(hidden, mask)))

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i of every cache takes the history of row rows[i] (beams that survived, in order)."""
        n = self.length
        if self.ancestry is not None:
            self.ancestry[:n] = self.ancestry[:n].index_select(1, rows)
            return
        for (k, v), (sk, sv) in zip(self.caches, self.spare):
            torch.index_select(k[:n], 1, rows, out=sk[:n])
            torch.index_select(v[:n], 1, rows, out=sv[:n])
        self.caches, self.spare = self.spare, self.caches

    def keep_documents(self, docs: torch.Tensor, rows: torch.Tensor) -> None:
        """Drop finished documents: keep the given document indices and their beam rows."""
        self.positions = [self.positions[r] for r in rows.tolist()]
        self.cross = [(k.index_select(0, docs), v.index_select(0, docs)) for k, v in self.cross]
        self.cross_mask = self.cross_mask.index_select(0, docs)
        if self.ancestry is not None:  # gather the kept rows' histories into place; ancestry restarts
            n, max_length = self.length, self.ancestry.shape[0]
            slots = self.ancestry[:n].index_select(1, rows)  # (n, kept)
            positions = torch.arange(n, device=slots.device)[:, None]
            self.caches = [tuple(_gathered(c, positions, slots, max_length) for c in kv) for kv in self.caches]
            self.ancestry = self.ancestry.new_zeros(max_length, len(rows))
            self.ancestry[:n] = torch.arange(len(rows), device=slots.device)
            return
        self.caches = [(k.index_select(1, rows), v.index_select(1, rows)) for k, v in self.caches]
        # the spare buffers receive reorder() output below self.length; above it they must be finite, as
        # new_caches' are: a row that joined later attends the whole cache under a mask, and 0 x NaN is NaN
        self.spare = [(k.new_zeros(k.shape), v.new_zeros(v.shape)) for k, v in self.caches]


def _encoding(device: torch.device):
    """Around an encoder pass: on the CPU, freed memory is reused rather than returned (see cpukernels)."""
    return reusing_freed_memory() if device.type == "cpu" else nullcontext()


def _padded_to(enc, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder output's hidden states (B, S', D) and mask (B, S'), padded to `length` positions:
    zeros, masked out, so that its documents fit a batch whose keys are longer."""
    extra = length - enc.hidden.shape[1]
    if extra < 0:
        raise ValueError(f"a document of {enc.hidden.shape[1]} positions cannot join a batch of {length}")
    return F.pad(enc.hidden, (0, 0, 0, extra)), F.pad(enc.mask, (0, extra), value=0)


def _gathered(cache: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, max_length: int) -> torch.Tensor:
    """(max_len, N, H, hd) -> (max_len, kept, H, hd) whose [p, i] is cache[p, slots[p, i]] for p < n."""
    out = cache.new_empty(max_length, slots.shape[1], *cache.shape[2:])
    out[: slots.shape[0]] = cache[positions, slots]
    out[slots.shape[0]:].zero_()  # finite, as new_caches' (see keep_documents)
    return out


class GraphedDecoderState(DecoderState):
    """The same steps with fixed shapes, so that on CUDA each step is one replay of a captured CUDA
    graph instead of ~250 kernel launches from Python (a decoding step there is launch-bound: ~44 ms
    a step on an H200 at any batch size, eagerly).

    Fixed shapes: the caches are attended whole under a mask of the filled positions; the reorder
    runs inside the next step, from one cache buffer into the other (two graphs, one per parity);
    finished documents go on being computed, unread, until half the rows or fewer still search: then
    everything is compacted to the live rows and the graphs are captured again. Each
    step's body is a pure function of (source caches, reorder, tokens, position), so the warm-up run
    that capturing needs leaves nothing behind. On other devices the body runs eagerly, which is
    what the CPU tests compare with DecoderState.
    """

    follows_ancestry = False  # the reorder is a copy inside the graph
    compact_at = 0.5  # compact when this fraction of the rows or fewer still search (0: never)

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
                 max_length: int):
        super().__init__(model, input_ids, attention_mask, num_beams, max_length)
        device = input_ids.device
        rows = input_ids.shape[0] * num_beams
        for k, v in self.caches + self.spare:  # masked positions are read: they must be finite
            k.zero_()
            v.zero_()
        self.buffers = (self.caches, self.spare)
        self.identity = torch.arange(rows, device=device)
        self.active = self.identity  # the full-batch row of each row the search still sees
        self.docs = torch.arange(input_ids.shape[0], device=device)  # and of each document
        self.order = self.identity.clone()  # the source row of every destination row, next step
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.position = torch.zeros(rows, dtype=torch.long, device=device)  # each row's, inside the graph
        self.capture = device.type == "cuda"
        self.graphs: list = [None, None]
        self.outputs: list = [None, None]

    def _body(self, parity: int) -> torch.Tensor:
        source, target = self.buffers[parity], self.buffers[1 - parity]
        for (k, v), (tk, tv) in zip(source, target):
            torch.index_select(k, 1, self.order, out=tk)
            torch.index_select(v, 1, self.order, out=tv)
        hidden = self.model.decode(self.tokens[:, None], self.cross, self.cross_mask, target, self.position)
        return self.model.log_probs(hidden[:, -1])

    def _captured(self, parity: int) -> torch.cuda.CUDAGraph:
        if self.graphs[parity] is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture (cuBLAS handles, workspaces)
                self._body(parity)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.outputs[parity] = self._body(parity)
            self.graphs[parity] = graph
        return self.graphs[parity]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        parity = self.length % 2
        self.tokens.index_copy_(0, self.active, tokens)
        if self.capture:
            self._captured(parity).replay()
            out = self.outputs[parity]
        else:
            out = self._body(parity)
        self.position += 1
        self.length += 1
        self.order.copy_(self.identity)  # no reorder unless reorder() asks for one
        return out if len(self.active) == len(self.identity) else out.index_select(0, self.active)

    def reorder(self, rows: torch.Tensor) -> None:
        self.order.index_copy_(0, self.active, self.active.index_select(0, rows))

    def refill(self, blocks: list[int], enc) -> None:
        """As DecoderState.refill, in place: the graphs read the same buffers, nothing is captured again."""
        k = self.num_beams
        blocks_t = torch.tensor(blocks, device=self.identity.device)
        self._take(self.docs.index_select(0, blocks_t), enc)
        rows = (blocks_t[:, None] * k + torch.arange(k, device=blocks_t.device)).view(-1)
        self.position.index_fill_(0, self.active.index_select(0, rows), 0)

    def keep_documents(self, docs: torch.Tensor, rows: torch.Tensor) -> None:
        self.active = self.active.index_select(0, rows)
        self.docs = self.docs.index_select(0, docs)
        if len(self.active) <= self.compact_at * len(self.identity):
            self._compact()

    def _compact(self) -> None:
        """Half the rows or fewer still search: go on at the smaller size, with the pending reorder
        applied (new graphs are captured at the next steps; a capture costs about a step)."""
        source = self.buffers[self.length % 2]
        pending = self.order.index_select(0, self.active)  # each live row's source row
        live = [(k.index_select(1, pending), v.index_select(1, pending)) for k, v in source]
        spare = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in live]
        self.buffers = (live, spare) if self.length % 2 == 0 else (spare, live)
        self.caches, self.spare = self.buffers
        self.cross = [(k.index_select(0, self.docs), v.index_select(0, self.docs)) for k, v in self.cross]
        self.cross_mask = self.cross_mask.index_select(0, self.docs)
        self.tokens = self.tokens.index_select(0, self.active)
        self.position = self.position.index_select(0, self.active)
        self.identity = torch.arange(len(self.active), device=self.identity.device)
        self.active, self.order = self.identity, self.identity.clone()
        self.docs = torch.arange(len(self.docs), device=self.docs.device)
        self.graphs, self.outputs = [None, None], [None, None]


def new_state(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
              max_length: int) -> DecoderState:
    """CUDA graphs on CUDA; plain eager steps elsewhere (on the CPU they drop finished documents and
    attend only to the filled cache positions, which the fixed shapes of a graph cannot)."""
    kind = GraphedDecoderState if graphed(input_ids.device) else DecoderState
    return kind(model, input_ids, attention_mask, num_beams, max_length)


def graphed(device: torch.device) -> bool:
    return device.type == "cuda"


# ---- the search ------------------------------------------------------------------------------------

@torch.inference_mode()
def beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, options: GenerationOptions,
                special: SpecialTokens, on_step=None) -> list[list[int]]:
    """input_ids, attention_mask (B, T) -> B token lists as generate() returns them: decoder start
    token first, EOS last unless max_length was reached. One beam is greedy search.

    on_step(length), if given, is called after each decoding step with the summaries' length so far
    (the CLI's live progress line; no I/O here)."""
    out: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    for doc, tokens in search(model, input_ids, attention_mask, options, special, on_step=on_step):
        out[doc] = tokens
    return out


def search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, options: GenerationOptions,
           special: SpecialTokens, *, more=None, on_step=None) -> Iterator[tuple[int, list[int]]]:
    """Beam search over a batch, continuously refilled: yields (document, tokens) as each document
    finishes; documents are numbered 0..B-1 for the rows of input_ids (B, T), then B, B+1, ... in
    the order `more` gives them.

    more(n, longest), if given, is asked for up to n further documents of at most `longest` tokens
    when n documents have finished while others still search: it returns their token ids, 1-D
    tensors, and they take the finished documents' rows (encoded now, their keys padded to the
    batch's). The batch ends when all its documents have finished and no more joined. Each
    document's summary is the one it gets alone (same ids in float32; in bfloat16 and float16 the
    same as in a padded batch)."""
    k = options.num_beams
    device = input_ids.device
    kernels = getattr(model, "kernels", None) if device.type == "cpu" else None  # for the candidates
    state = new_state(model, input_ids, attention_mask, k, options.max_length)
    try:
        batch = input_ids.shape[0]
        taken = batch  # documents numbered so far
        hyps = {d: Hypotheses(k, options.length_penalty, options.early_stopping) for d in range(batch)}
        active = list(range(batch))  # documents still searching, in row-block order
        sequences = [[special.decoder_start] for _ in range(batch * k)]
        beam_scores = torch.tensor(_first_scores(k) * batch, device=device)
        tokens = torch.full((batch * k,), special.decoder_start, dtype=torch.long, device=device)
        while True:
            scores = process_logits(state.step(tokens), sequences, options, special)
            vocab = scores.shape[-1]
            top_scores, top_ids = _top_candidates(scores, beam_scores, len(active), k, kernels)
            chosen, finished = _select_beams(top_scores.tolist(), top_ids.tolist(), vocab, k, sequences,
                                             [hyps[d] for d in active], special.eos)
            sequences = [sequences[r] + [t] for r, t, _ in chosen]
            if on_step is not None:
                on_step(max(len(seq) for seq in sequences))
            for i in range(len(active)):  # at the maximum length: the beams are the hypotheses
                if i not in finished and len(sequences[i * k]) >= options.max_length:
                    for j in range(k):
                        seq = sequences[i * k + j]
                        hyps[active[i]].add(seq, chosen[i * k + j][2], len(seq) - 1)
                    finished.add(i)
            done = sorted(finished)
            for i in done:
                yield active[i], _with_eos(hyps.pop(active[i]).best(), special.eos, options.max_length)
            if len(done) == len(active):
                return
            rows = [r for r, _, _ in chosen]
            next_tokens = [t for _, t, _ in chosen]
            next_scores = [s for _, _, s in chosen]
            joining = list(more(len(done), input_ids.shape[1])) if more is not None and done else []
            refilled = done[: len(joining)]
            for i in refilled:  # a new document in the rows of a finished one, from its start
                active[i], taken = taken, taken + 1
                hyps[active[i]] = Hypotheses(k, options.length_penalty, options.early_stopping)
                for r in range(i * k, (i + 1) * k):
                    rows[r], sequences[r], next_tokens[r] = r, [special.decoder_start], special.decoder_start
                next_scores[i * k: (i + 1) * k] = _first_scores(k)
            tokens = torch.tensor(next_tokens, device=device)
            beam_scores = torch.tensor(next_scores, device=device)
            state.reorder(torch.tensor(rows, device=device))
            if joining:
                state.refill(refilled, _encoded(model, joining, special.pad, device))
            gone = set(done[len(joining):])
            if gone:
                keep = [i for i in range(len(active)) if i not in gone]
                keep_rows = [i * k + j for i in keep for j in range(k)]
                idx = torch.tensor(keep_rows, device=device)
                state.keep_documents(torch.tensor(keep, device=device), idx)
                tokens, beam_scores = tokens[idx], beam_scores[idx]
                sequences = [sequences[r] for r in keep_rows]
                active = [active[i] for i in keep]
    finally:
        del state


def _first_scores(k: int) -> list[float]:
    """A document's beam scores before its first step: all beams start equal, so only the first expands."""
    return [0.0] + [-1e9] * (k - 1)


def right_padded(rows: list, pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (lists or 1-D tensors) -> ids and attention mask (B, longest) on `device`, right-padded
    as a tokenizer pads a batch."""
    ids = torch.full((len(rows), max(len(t) for t in rows)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(rows):
        ids[i, : len(t)] = torch.as_tensor(t)
        mask[i, : len(t)] = 1
    return ids.to(device), mask.to(device)


def _encoded(model, joining: list[torch.Tensor], pad: int, device: torch.device):
    """Documents joining a batch (1-D token ids each) -> their encoder output, right-padded together."""
    with _encoding(device):
        return model.encode(*right_padded(joining, pad, device))


def _top_candidates(scores: torch.Tensor, beam_scores: torch.Tensor, docs: int, k: int,
                    kernels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2k best (score, beam x vocab + token) of each document over its k beams' rows of
    scores + beam_scores (docs x k, vocab), best first, as torch.topk over each document's flattened
    (k x vocab) scores gives them: each row's own 2k best first (rows in parallel; the flattened
    top-k is one serial pass, ~2x slower on CPU), then the best 2k of those. The rows' top-k on the
    CPU kernels where given (cpukernels.top_rows: torch.topk's own results, ~8x faster, the sum
    never written out)."""
    vocab = scores.shape[-1]
    if kernels is not None and 2 * k * 64 <= vocab and scores.dtype == torch.float32:
        row_scores, row_ids = kernels.top_rows(scores.contiguous(), beam_scores.float().contiguous(), 2 * k)
    else:
        row_scores, row_ids = torch.topk(scores + beam_scores[:, None], 2 * k, dim=1)  # (docs x k, 2k)
    flat_ids = row_ids + torch.arange(k, device=scores.device).repeat(docs)[:, None] * vocab
    best, at = torch.topk(row_scores.view(docs, -1), 2 * k, dim=1)
    return best, flat_ids.view(docs, -1).gather(1, at)


def _select_beams(top_scores, top_ids, vocab, k, sequences, hyps, eos):
    """BeamSearchScorer.process for the active documents: EOS candidates among the first k become
    finished hypotheses; the first k other candidates continue. Returns the continuing
    (row, token, score) triples, k per document, and the indices of documents now finished."""
    chosen, finished = [], set()
    for i, (scores, ids) in enumerate(zip(top_scores, top_ids)):
        cur_len = len(sequences[i * k])  # this document's: documents join a batch at different steps
        picked = []
        for rank, (score, flat) in enumerate(zip(scores, ids)):
            row, token = i * k + flat // vocab, flat % vocab
            if token == eos:
                if rank < k:
                    hyps[i].add(list(sequences[row]), score, cur_len)
            else:
                picked.append((row, token, score))
            if len(picked) == k:
                break
        if len(picked) < k:
            raise RuntimeError(f"beam search found only {len(picked)} continuations for {k} beams")
        chosen.extend(picked)
        if hyps[i].is_done(max(scores), cur_len + 1):
            finished.add(i)
    return chosen, finished


def _with_eos(tokens: list[int], eos: int, max_length: int) -> list[int]:
    """generate() appends EOS to every returned hypothesis that is shorter than max_length."""
    return tokens + [eos] if len(tokens) < max_length else tokens
