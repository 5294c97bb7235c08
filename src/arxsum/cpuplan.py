"""Which implementation each hot CPU phase runs on this machine, chosen by timing them (FFTW's wisdom).

The fastest way depends on the CPU, not on its name: on an AMD Zen 4 arxsum's kernels beat torch
everywhere, on an Intel Xeon with AMX torch's oneDNN already uses AMX for some products, and the
AVX2 build of the kernels is slower than torch on some phases. So the first time a model runs on
the CPU, each phase is timed on the model's real shapes, both ways, and the faster kept:

    encoder_attention   the encoder's LSG attention: kernels.local_attention, or torch's SDPA
    decoder_step        a decoding step's layers: kernels.decoder_layers (all in one call), or torch's operators
    lm_head             the step's LM head and log-softmax (model.log_probs): kernels.linear, or torch's GEMM
    bf16_products       (bfloat16, where built in) the kernels' pair products: AMX tiles or vdpbf16ps
    encoder_products    (bfloat16) the products over many rows (encoder, cross K/V) and torch's encoder
                        attention: torch's bfloat16 operations, or float32 ones on the bfloat16 values
                        (model.use_float32_products): 5.7x faster on an AVX2 CPU (AMD EPYC Zen 3)

The plan is saved as JSON beside the compiled kernels, keyed by the CPU, the versions of torch,
arxsum and the kernels, the dtype, the model's shapes and the thread count, so it is measured once;
unless the machine was busy while measuring (this process got less than BUSY_SHARE of its threads'
time: the timings then mislead), when the choices serve that run only and are measured again.
ARXSUM_CPU_PLAN forces choices instead: "kernels" (every phase on the kernels, as the tests run),
"torch", or entries like "lm_head=torch,bf16_products=amx" (the rest measured).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from arxsum import __version__, cpukernels

PHASES = {
    "encoder_attention": ("kernels", "torch"),
    "decoder_step": ("kernels", "torch"),
    "lm_head": ("kernels", "torch"),
    "bf16_products": ("amx", "avx512-bf16"),
    "encoder_products": ("bfloat16", "float32"),
}
PLAN_VERSION = 4  # bump when what is measured changes: saved plans are then measured again
STEPS_PER_PAPER = 320  # the weight of a decoding step against an encoder pass (max length 320)
# A measurement during which this process got less than this share of its threads' time was taken on
# a busy machine: its choices are used for that run but not saved. Measured on the 2-vCPU AMD EPYC:
# 0.96 quiet; 0.73 beside a test suite, where it chose torch's decoding step, 3x slower on a quiet
# machine. Measurements shorter than BUSY_MIN_S (small models) are saved regardless: too short to judge.
BUSY_SHARE = 0.85
BUSY_MIN_S = 1.0
BEATEN = 2.0  # an option whose first call takes this many times another's best is not timed again
ATTENTION_ROUNDS = 3  # timed calls of each way of the encoder attention, in turns (_time_encoder_attention)


@dataclass(frozen=True)
class CpuPlan:
    encoder_attention: str = "kernels"
    decoder_step: str = "kernels"
    lm_head: str = "kernels"
    bf16_products: str = "-"  # "-": no choice here (float32, or no pair products in this build)
    encoder_products: str = "-"  # "-": float32 models
    how: str = "forced"  # measured, saved (read back from the cache), forced (ARXSUM_CPU_PLAN)
    timings_ms: dict = field(default_factory=dict)  # "phase/choice" -> the best time measured
    cpu_share: float | None = None  # measured: the CPU time this process got / (wall time x threads)
    measured_s: float | None = None  # measured: how long measuring took

    def choices(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in PHASES}


def apply(model, kernels, plan: CpuPlan) -> None:
    """Route the model's phases as the plan says (kernels: cpukernels.CpuKernels)."""
    if kernels.can_amx and plan.bf16_products != "-":
        kernels.set_amx(plan.bf16_products == "amx")
    model.use_float32_products(plan.encoder_products == "float32")
    model.use_kernels(kernels, encoder_attention=plan.encoder_attention == "kernels",
                      decoder_step=plan.decoder_step == "kernels", lm_head=plan.lm_head == "kernels")


def plan_for(model, kernels, notify: Callable[[str], None] | None = None) -> CpuPlan:
    """The plan for this model on this machine: forced, saved, or measured now (and saved)."""
    forced = forced_choices()
    dtype = model.final_logits_bias.dtype
    if not (kernels.can_amx and dtype == torch.bfloat16):
        forced["bf16_products"] = "-"
    elif not kernels.set_amx(True):
        forced["bf16_products"] = "avx512-bf16"  # built with AMX, but the OS does not grant it
    if dtype != torch.bfloat16:
        forced["encoder_products"] = "-"
    if set(forced) >= set(PHASES):
        return CpuPlan(**forced, how="forced")
    path = plan_path(model, kernels)
    saved = _read(path)
    if saved is not None:
        return replace(saved, **forced)
    if notify is not None:
        notify("measuring which CPU paths are fastest on this machine (once; saved for next time)")
    plan = measure(model, kernels, forced)
    if busy(plan):
        if notify is not None:
            notify(f"the machine was busy while measuring (arxsum got {plan.cpu_share:.0%} of its threads' "
                   "time): the choices serve this run only and are measured again next time")
    else:
        _write(path, plan, model, kernels)
    return plan


def busy(plan: CpuPlan) -> bool:
    """Whether a measured plan was measured while other processes took the CPU (see BUSY_SHARE)."""
    return (plan.cpu_share is not None and plan.measured_s is not None and plan.measured_s >= BUSY_MIN_S
            and plan.cpu_share < BUSY_SHARE)


def forced_choices() -> dict[str, str]:
    """ARXSUM_CPU_PLAN as choices; a value it does not know is an error that names the known ones."""
    text = os.environ.get("ARXSUM_CPU_PLAN", "").strip()
    if text in ("", "measure", "auto"):
        return {}
    if text in ("kernels", "torch"):
        return {"encoder_attention": text, "decoder_step": text, "lm_head": text,
                **({"bf16_products": "amx", "encoder_products": unmeasured_encoder_products()} if text == "kernels"
                   else {"encoder_products": "bfloat16", "bf16_products": "-"})}  # torch: no pair products run
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in PHASES or value not in PHASES[name]:
            known = "; ".join(f"{k}={'|'.join(v)}" for k, v in PHASES.items())
            raise ValueError(f"ARXSUM_CPU_PLAN: {item.strip()!r} is not one of: kernels, torch, measure, or {known}")
        out[name] = value
    return out


def unmeasured_encoder_products() -> str:
    """encoder_products where nothing is measured (no kernels, ARXSUM_CPU_PLAN=kernels): float32 where
    oneDNN has no bfloat16 GEMM for this CPU (torch's fallback is then ~6x slower than float32)."""
    from arxsum.model import PackedWeight

    return "bfloat16" if PackedWeight.supported(torch.bfloat16) else "float32"


def plan_key(model, kernels) -> dict:
    c = model.config
    return {
        "plan": PLAN_VERSION,
        "cpu": cpukernels.cpuinfo("model name") or platform.processor(),
        "flags": hashlib.sha256(cpukernels.cpuinfo("flags").encode()).hexdigest()[:12],
        "isa": kernels.isa,
        "library": Path(kernels.lib._name).name,  # its name holds the source's and compiler's hash
        "torch": torch.__version__,
        "arxsum": __version__,
        "threads": torch.get_num_threads(),
        "dtype": str(model.final_logits_bias.dtype).removeprefix("torch."),
        "shapes": [c.d_model, c.encoder_attention_heads, c.decoder_attention_heads, c.encoder_layers,
                   c.decoder_layers, c.decoder_ffn_dim, c.vocab_size, c.block_size, c.num_global_tokens,
                   c.max_input_tokens],
    }


def plan_path(model, kernels) -> Path:
    key = plan_key(model, kernels)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cpukernels.cache_dir() / "kernels" / f"plan-{key['dtype']}-{digest}.json"


def _read(path: Path) -> CpuPlan | None:
    try:
        data = json.loads(path.read_text())
        choices = data["choices"]
        if set(choices) != set(PHASES):
            return None
        return CpuPlan(**choices, how="saved", timings_ms=data.get("timings_ms", {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or damaged: measured again


def _write(path: Path, plan: CpuPlan, model, kernels) -> None:
    data = {"key": plan_key(model, kernels), "choices": plan.choices(), "timings_ms": plan.timings_ms,
            "cpu_share": plan.cpu_share, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)  # atomic: runs measuring at once each write a whole file
    except OSError:
        pass  # a read-only cache: measured again next time


# ---- measuring --------------------------------------------------------------------------------------

def best_ms(fn: Callable[[], object], runs: int, beaten_ms: float | None = None) -> float:
    """The fastest of `runs` calls after a warm-up, in ms. A warm-up slower than `beaten_ms` (another
    way's time, given as BEATEN times it) is the answer: timing a clear loser again would not change
    the choice (the AVX2 encoder-attention kernel: 4.7 s a call against torch's 1.5 s)."""
    start = time.perf_counter()
    fn()  # warm-up: first-touch pages, oneDNN's primitive cache
    first = (time.perf_counter() - start) * 1e3
    if beaten_ms is not None and first > BEATEN * beaten_ms:
        return first
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


@torch.inference_mode()
def measure(model, kernels, forced: dict[str, str] | None = None) -> CpuPlan:
    """Time each phase both ways on the model's real shapes (a full-length document, 5 beams) and
    choose the faster; `forced` choices are kept (their phases are still timed, for the record)."""
    forced = dict(forced or {})
    c = model.config
    dtype = model.final_logits_bias.dtype
    gen = torch.Generator().manual_seed(0)
    tokens = max(3, c.max_input_tokens // c.block_size) * c.block_size  # the encoder's length, globals excluded
    hidden = (torch.randn(1, c.num_global_tokens + tokens, c.d_model, generator=gen) * 0.5).to(dtype)
    shapes = (hidden, torch.zeros(1, 1, 1, hidden.shape[1], dtype=dtype),
              torch.randn(5, 1, c.d_model, generator=gen).to(dtype))
    amx_options = [forced["bf16_products"]] if "bf16_products" in forced else list(PHASES["bf16_products"])
    kernel_ms: dict[str, dict[str, float]] = {}  # bf16_products option -> phase -> ms
    started, cpu_started = time.perf_counter(), process_cpu_s()
    products_ms = {}
    try:
        if dtype == torch.bfloat16:  # first: torch's encoder attention is then timed as it will run
            products_ms = _time_products(model, hidden)
            forced.setdefault("encoder_products", min(products_ms, key=products_ms.get))
            model.use_float32_products(forced["encoder_products"] == "float32")
        attention_ms = _time_encoder_attention(model, kernels, amx_options, *shapes[:2])
        for option in amx_options:  # the kernels first: torch's way, often the slower, is then bounded
            if option != "-":
                kernels.set_amx(option == "amx")
            model.use_kernels(kernels)
            kernel_ms[option] = {"encoder_attention": attention_ms[option], **_time_phases(model, *shapes)}
        model.use_kernels(kernels, encoder_attention=False, decoder_step=False, lm_head=False)
        fastest = {p: min(ms[p] for ms in kernel_ms.values()) for p in ("decoder_step", "lm_head")}
        torch_ms = {"encoder_attention": attention_ms["torch"], **_time_phases(model, *shapes, beaten=fastest)}
    finally:
        model.use_kernels(None)
        model.use_float32_products(False)
    wall = time.perf_counter() - started
    share = (process_cpu_s() - cpu_started) / (wall * torch.get_num_threads()) if wall > 0 else None
    weights = {"encoder_attention": c.encoder_layers, "decoder_step": STEPS_PER_PAPER, "lm_head": STEPS_PER_PAPER}
    best = None
    for option, ms in kernel_ms.items():  # the option whose paper, each phase its faster way, is fastest
        choices = {p: forced.get(p) or ("kernels" if ms[p] <= torch_ms[p] else "torch") for p in weights}
        total = sum(w * (ms[p] if choices[p] == "kernels" else torch_ms[p]) for p, w in weights.items())
        if best is None or total < best[0]:
            best = (total, option, choices)
    _, option, choices = best
    timings = {f"{p}/torch": v for p, v in torch_ms.items()}
    for o, ms in kernel_ms.items():
        timings.update({f"{p}/kernels" + ("" if o == "-" else f"+{o}"): v for p, v in ms.items()})
    timings.update({f"encoder_products/{o}": v for o, v in products_ms.items()})
    return CpuPlan(**choices, bf16_products=option, encoder_products=forced.get("encoder_products", "-"),
                   how="measured",
                   timings_ms={k: round(v, 3) for k, v in sorted(timings.items())},
                   cpu_share=None if share is None else round(share, 3), measured_s=round(wall, 3))


def process_cpu_s() -> float:
    """CPU seconds this process has used, all its threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time_products(model, hidden) -> dict[str, float]:
    """encoder_products' options (ms): an encoder layer's first feed-forward product (with its
    activation) over one of the encoder's row chunks, in bfloat16 and in float32 on the bf16 values."""
    from arxsum.model import ENCODER_CHUNK

    layer = model.model.encoder.layers[0]
    rows = hidden[0, :ENCODER_CHUNK]
    out = {}
    for option in PHASES["encoder_products"]:
        model.use_float32_products(option == "float32")
        out[option] = best_ms(lambda: layer.fc1(rows, layer.activation), 2, min(out.values(), default=None))
    model.use_float32_products(False)
    return out


def _time_encoder_attention(model, kernels, amx_options: list[str], hidden, key_mask) -> dict[str, float]:
    """One encoder layer's attention (ms): "torch", and the kernels under each bf16_products option.
    The ways take turns, ATTENTION_ROUNDS calls each after a warm-up, the fastest kept: on the 2-vCPU
    VMs the speed drifts by up to 30% within a minute, and one call each, minutes apart, once chose
    torch's attention where the kernels' was 20% faster. On half the document (at least 3 blocks):
    the blocks are independent, the time goes with their number, and the rounds cost what one call
    each of the full length did. A way whose warm-up takes BEATEN times the fastest warm-up is not
    timed again (an AVX2 kernel once took 4.7 s against torch's 1.5 s)."""
    c = model.config
    blocks = (hidden.shape[1] - c.num_global_tokens) // c.block_size
    length = c.num_global_tokens + max(3, blocks // 2) * c.block_size
    hidden, key_mask = hidden[:, :length], key_mask[..., :length]
    attention = model.model.encoder.layers[0].self_attn

    def route(on_kernels: bool) -> None:  # as use_kernels routes it: only heads the kernels can take
        model.use_kernels(kernels, encoder_attention=on_kernels, decoder_step=False, lm_head=False)

    route(True)
    if attention.kernels is None:  # the kernels cannot take these heads: torch either way
        ms = best_ms(lambda: attention.context(hidden, key_mask), ATTENTION_ROUNDS)
        return {way: ms for way in ["torch", *amx_options]}

    def timed(way: str) -> float:
        route(way != "torch")
        if way not in ("torch", "-"):
            kernels.set_amx(way == "amx")
        start = time.perf_counter()
        attention.context(hidden, key_mask)
        return (time.perf_counter() - start) * 1e3

    try:
        first = {way: timed(way) for way in ["torch", *amx_options]}  # warm-ups
        out = dict(first)
        racing = [way for way, ms in first.items() if ms <= BEATEN * min(first.values())]
        for _ in range(ATTENTION_ROUNDS):
            for way in racing:
                out[way] = min(out[way], timed(way))
    finally:
        route(False)
    return out


def _time_phases(model, hidden, key_mask, step_hidden, beaten: dict[str, float] | None = None) -> dict[str, float]:
    """The phases' times (ms) with the model routed as it is now: a decoding step's layers (the step
    less its LM head) and the LM head for 5 rows. beaten: another routing's times; a phase whose
    first call already takes BEATEN times as long is not timed again (torch's bfloat16 step on an
    AVX2 CPU: ~1.1 s a step against the kernels' 46 ms, timed 5 times before)."""
    from arxsum.decoding import DecoderState
    from arxsum.model import EncoderOutput

    out = {"lm_head": best_ms(lambda: model.log_probs(step_hidden[:, 0]), 3, beaten and beaten["lm_head"])}
    rows = step_hidden.shape[0]
    enc = EncoderOutput(hidden=hidden, mask=torch.ones(hidden.shape[:2], dtype=torch.long))
    state = DecoderState.from_encoding(model, enc, rows, 16)
    tokens = torch.full((rows,), model.config.decoder_start_token_id, dtype=torch.long)
    order = torch.arange(rows).flip(0)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        state.step(tokens)
        state.reorder(order)
        times.append(time.perf_counter() - start)
        if beaten and times[0] * 1e3 - out["lm_head"] > BEATEN * beaten["decoder_step"]:
            break
    # the step less its LM head, both at their fastest (the first two steps: warm-up, unless beaten); a
    # step of a tiny model is timer noise: at least 1 us
    out["decoder_step"] = max(min(times[2:] or times) * 1e3 - out["lm_head"], 1e-3)
    return out
