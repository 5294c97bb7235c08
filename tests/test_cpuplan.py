"""cpuplan: each CPU phase timed both ways on the model's shapes, the faster kept, saved, forced."""

from __future__ import annotations

import json

import pytest
import torch

from arxsum import cpukernels, cpuplan
from arxsum.errors import OptionsError
from arxsum.model import LSGBartConfig, LSGBartForConditionalGeneration
from arxsum.summarizer import use_cpu_fast_paths
from builders import tiny_config


@pytest.fixture(scope="module")
def kernels():
    k = cpukernels.load()
    if k is None:
        pytest.skip(f"no CPU kernels on this machine: {cpukernels.unavailable_reason()}")
    return k


def model_64(dtype=torch.float32) -> LSGBartForConditionalGeneration:
    """Small, but with the kernels' 64-wide heads, so that every phase has both ways to run."""
    config = tiny_config(300, d_model=128, encoder_attention_heads=2, decoder_attention_heads=2,
                         encoder_ffn_dim=256, decoder_ffn_dim=256, max_position_embeddings=256)
    torch.manual_seed(0)
    model = LSGBartForConditionalGeneration(LSGBartConfig.from_dict(config)).eval()
    return model.to(dtype)


def routing(model) -> dict[str, bool]:
    """Which phases the model now sends to the kernels."""
    return {"encoder_attention": all(layer.self_attn.kernels is not None for layer in model.model.encoder.layers),
            "decoder_step": all(layer.fused is not None for layer in model.model.decoder.layers),
            "lm_head": model._lm_head_tiled is not None}


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ARXSUM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ARXSUM_CPU_PLAN", raising=False)
    return tmp_path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_measured_once_then_read_back_and_applied(kernels, cache, monkeypatch, dtype):
    model = model_64(dtype)
    notes = []
    plan = use_cpu_fast_paths(model, notes.append)
    assert plan.how == "measured" and len(notes) == 1 and "measuring" in notes[0]
    for phase in ("encoder_attention", "decoder_step", "lm_head"):
        assert getattr(plan, phase) in ("kernels", "torch")
        assert plan.timings_ms[f"{phase}/torch"] > 0
        assert any(k.startswith(f"{phase}/kernels") for k in plan.timings_ms)
        assert routing(model)[phase] == (getattr(plan, phase) == "kernels")
    amx = kernels.can_amx and dtype == torch.bfloat16
    assert (plan.bf16_products in ("amx", "avx512-bf16")) if amx else plan.bf16_products == "-"
    saved = list((cache / "kernels").glob(f"plan-{str(dtype)[6:]}-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["choices"] == plan.choices()

    again = use_cpu_fast_paths(model_64(dtype), notes.append)
    assert again.how == "saved" and again.choices() == plan.choices() and len(notes) == 1


def widened(model) -> bool | None:
    """Whether the model's many-row products and torch encoder attention compute in float32 (all of
    them), in bfloat16 (none), or a mix (None: a bug)."""
    flags = {linear.widen for linear in model._many_row_linears()}
    flags |= {layer.self_attn.widen for layer in model.model.encoder.layers}
    return flags.pop() if len(flags) == 1 else None


def test_a_bfloat16_plan_times_the_encoder_products_both_ways(kernels, cache):
    model = model_64(torch.bfloat16)
    plan = use_cpu_fast_paths(model)
    assert plan.encoder_products in ("bfloat16", "float32")
    assert plan.timings_ms["encoder_products/bfloat16"] > 0 and plan.timings_ms["encoder_products/float32"] > 0
    assert widened(model) == (plan.encoder_products == "float32")
    again = model_64(torch.bfloat16)
    assert use_cpu_fast_paths(again).encoder_products == plan.encoder_products and widened(again) == widened(model)
    assert use_cpu_fast_paths(model_64()).encoder_products == "-"  # float32: nothing to choose


@pytest.mark.parametrize("faster", ["bfloat16", "float32"])
def test_the_faster_encoder_products_are_chosen(kernels, monkeypatch, faster):
    timings = {"bfloat16": 2.0, "float32": 3.0} if faster == "bfloat16" else {"bfloat16": 7.0, "float32": 1.0}
    monkeypatch.setattr(cpuplan, "_time_products", lambda model, hidden: timings)
    seen = []
    real = cpuplan._time_encoder_attention

    def timed(model, *args):  # torch's encoder attention is timed as the chosen products will run it
        seen.append(widened(model))
        return real(model, *args)

    monkeypatch.setattr(cpuplan, "_time_encoder_attention", timed)
    plan = cpuplan.measure(model_64(torch.bfloat16), kernels)
    assert plan.encoder_products == faster and plan.timings_ms[f"encoder_products/{faster}"] == timings[faster]
    assert seen and set(seen) == {faster == "float32"}


def test_a_clear_loser_is_timed_once():
    """best_ms: a warm-up slower than BEATEN times the other way's best is the answer (no more calls);
    otherwise the warm-up is followed by `runs` timed calls, the fastest kept."""
    import time as clock

    calls = []

    def slow():
        calls.append(1)
        clock.sleep(0.02)

    assert cpuplan.best_ms(slow, 3, beaten_ms=5.0) >= 20 and len(calls) == 1
    calls.clear()
    assert cpuplan.best_ms(slow, 3, beaten_ms=100.0) >= 20 and len(calls) == 4
    calls.clear()
    cpuplan.best_ms(slow, 2)
    assert len(calls) == 3


@pytest.mark.parametrize("torch_ms,racing", [(20.0, ["torch", "kernels"]), (100.0, ["kernels"])])
def test_encoder_attention_ways_take_turns_on_half_the_document(kernels, monkeypatch, torch_ms, racing):
    """Each way warms up, then the ways still racing take turns, ATTENTION_ROUNDS calls each, so that
    a machine speeding up or slowing down meanwhile weighs on both alike; a way whose warm-up took
    BEATEN times the fastest's is not called again. On half the document's blocks."""
    import time as clock

    model = model_64()
    c = model.config
    attention = model.model.encoder.layers[0].self_attn
    calls = []

    def context(hidden, key_mask):
        way = "torch" if attention.kernels is None else "kernels"
        calls.append((way, hidden.shape[1], key_mask.shape[-1]))
        clock.sleep((torch_ms if way == "torch" else 20.0) / 1e3)

    monkeypatch.setattr(attention, "context", context)
    length = c.num_global_tokens + 8 * c.block_size
    hidden, key_mask = torch.zeros(1, length, c.d_model), torch.zeros(1, 1, 1, length)
    got = cpuplan._time_encoder_attention(model, kernels, ["-"], hidden, key_mask)
    half = c.num_global_tokens + 4 * c.block_size
    assert [way for way, *_ in calls] == ["torch", "kernels"] + racing * cpuplan.ATTENTION_ROUNDS
    assert {(n, m) for _, n, m in calls} == {(half, half)}
    assert got["-"] >= 20.0 and got["torch"] >= torch_ms  # "-": the kernels, no bf16_products choice
    assert attention.kernels is None  # left as it was found


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_heads_the_kernels_cannot_take_are_measured_on_torch(kernels, cache, dtype):
    """The tests' tiny model (narrow heads, as in the bench's --tiny runs): the kernels run none of its
    attention or layers; measuring still works and routes nothing there that they cannot take."""
    config = tiny_config(300, max_position_embeddings=256)
    model = LSGBartForConditionalGeneration(LSGBartConfig.from_dict(config)).eval().to(dtype)
    assert model.model.encoder.layers[0].self_attn.head_dim != kernels.head_dim
    plan = use_cpu_fast_paths(model)
    assert plan.how == "measured" and plan.timings_ms["encoder_attention/torch"] > 0
    assert not routing(model)["encoder_attention"] and not routing(model)["decoder_step"]


def test_a_step_already_beaten_is_not_timed_again(monkeypatch):
    """_time_phases after the kernels' routing: a first decoding step BEATEN times slower than the
    kernels' is the answer (torch's bfloat16 step on an AVX2 CPU: ~1.1 s against 46 ms)."""
    import time as clock

    from arxsum import decoding

    model = model_64()
    c = model.config
    steps = []
    real = decoding.DecoderState.step
    monkeypatch.setattr(decoding.DecoderState, "step",
                        lambda state, tokens: (steps.append(1), clock.sleep(0.01), real(state, tokens))[2])
    hidden = torch.randn(1, c.num_global_tokens + 4 * c.block_size, c.d_model)
    shapes = (hidden, torch.zeros(1, 1, 1, hidden.shape[1]), torch.randn(5, 1, c.d_model))
    with torch.inference_mode():
        beaten = cpuplan._time_phases(model, *shapes, beaten={"decoder_step": 1.0, "lm_head": 1e3})
        assert len(steps) == 1 and beaten["decoder_step"] >= 5.0
        steps.clear()
        cpuplan._time_phases(model, *shapes, beaten={"decoder_step": 1e3, "lm_head": 1e3})
        assert len(steps) == 5


def test_the_faster_way_is_chosen_phase_by_phase(kernels, monkeypatch):
    """With the timings made up, the choice follows them: kernels where they are faster, torch elsewhere."""
    fake = {"torch": {"decoder_step": 1.0, "lm_head": 2.0}, "kernels": {"decoder_step": 0.5, "lm_head": 3.0}}

    def timed(model, *shapes, beaten=None):
        return fake["kernels" if routing(model)["lm_head"] else "torch"]

    monkeypatch.setattr(cpuplan, "_time_phases", timed)
    monkeypatch.setattr(cpuplan, "_time_encoder_attention", lambda model, kernels, options, *shapes:
                        {"torch": 5.0, **{option: 9.0 for option in options}})
    plan = cpuplan.measure(model_64(), kernels)
    assert (plan.encoder_attention, plan.decoder_step, plan.lm_head) == ("torch", "kernels", "torch")
    assert plan.timings_ms["lm_head/torch"] == 2.0


@pytest.mark.parametrize("text,want", [("torch", dict(encoder_attention=False, decoder_step=False, lm_head=False)),
                                       ("kernels", dict(encoder_attention=True, decoder_step=True, lm_head=True)),
                                       ("encoder_attention=torch,decoder_step=kernels,lm_head=torch,"
                                        "encoder_products=float32,bf16_products=amx",
                                        dict(encoder_attention=False, decoder_step=True, lm_head=False))])
def test_forced_choices_are_not_measured(kernels, cache, monkeypatch, text, want):
    monkeypatch.setenv("ARXSUM_CPU_PLAN", text)
    monkeypatch.setattr(cpuplan, "measure", lambda *a, **k: pytest.fail("measured a forced plan"))
    model = model_64()
    plan = use_cpu_fast_paths(model, pytest.fail)
    assert plan.how == "forced" and routing(model) == want
    model = model_64(torch.bfloat16)
    plan = use_cpu_fast_paths(model, pytest.fail)
    assert plan.how == "forced" and routing(model) == want
    # all torch: its own bfloat16 operations; all kernels: as oneDNN's support for bfloat16 says
    want_products = {"torch": "bfloat16", "kernels": cpuplan.unmeasured_encoder_products()}.get(text, "float32")
    assert plan.encoder_products == want_products and widened(model) == (want_products == "float32")


def test_every_routing_computes_the_same_logits(kernels, cache, monkeypatch):
    ids = torch.randint(5, 300, (1, 200), generator=torch.Generator().manual_seed(1))
    decoder_ids = torch.randint(5, 300, (1, 7), generator=torch.Generator().manual_seed(2))
    out = {}
    for text in ("torch", "kernels", "encoder_attention=kernels,decoder_step=torch,lm_head=kernels"):
        monkeypatch.setenv("ARXSUM_CPU_PLAN", text)
        model = model_64()
        use_cpu_fast_paths(model)
        with torch.inference_mode():
            out[text] = model(ids, decoder_input_ids=decoder_ids)
    first = out.pop("torch")
    for logits in out.values():
        torch.testing.assert_close(logits, first, atol=2e-4, rtol=1e-4)


def test_a_misspelt_plan_is_one_clear_error(kernels, cache, monkeypatch):
    monkeypatch.setenv("ARXSUM_CPU_PLAN", "lm_head=gpu")
    with pytest.raises(OptionsError, match="ARXSUM_CPU_PLAN: 'lm_head=gpu' is not one of"):
        use_cpu_fast_paths(model_64())


def test_a_damaged_saved_plan_is_measured_again(kernels, cache):
    model = model_64()
    path = cpuplan.plan_path(model, kernels)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    notes = []
    assert use_cpu_fast_paths(model, notes.append).how == "measured" and notes
    assert json.loads(path.read_text())["choices"]


def test_env_names_the_isa_and_the_measured_choices(kernels, cache):
    from arxsum.commands.env import cpu_kernel_rows

    assert dict(cpu_kernel_rows(cache))["cpu plan"].startswith("not measured yet")
    plan = use_cpu_fast_paths(model_64())
    rows = dict(cpu_kernel_rows(cache))
    assert rows["cpu kernels isa"].startswith(f"{kernels.isa} (ARXSUM_CPU_ISA=")
    assert rows["plan float32"].startswith(
        f"encoder_attention {plan.encoder_attention}, decoder_step {plan.decoder_step}, lm_head {plan.lm_head} (measured ")


def test_env_says_when_the_kernels_are_off(monkeypatch, tmp_path):
    from arxsum.commands.env import cpu_kernel_rows

    monkeypatch.setenv("ARXSUM_CPU_ISA", "none")
    assert cpu_kernel_rows(tmp_path) == [("cpu kernels", "off: turned off by ARXSUM_CPU_ISA=none")]


def test_a_plan_measured_on_a_busy_machine_serves_its_run_only(kernels, cache, monkeypatch):
    """While other processes take the CPU, the timings mislead (OpenMP threads wait for a descheduled
    one): such a plan is used but not saved, and the next run measures again."""
    clock = iter(range(0, 10**6, 1))  # each call: one more CPU second; the wall clock runs ~2x faster

    monkeypatch.setattr(cpuplan, "BUSY_MIN_S", 0.0)
    monkeypatch.setattr(cpuplan, "process_cpu_s", lambda: 0.0 if next(clock) == 0 else 0.001)
    notes = []
    plan = use_cpu_fast_paths(model_64(), notes.append)
    assert plan.how == "measured" and plan.cpu_share is not None and plan.cpu_share < cpuplan.BUSY_SHARE
    assert len(notes) == 2 and "busy" in notes[1] and "measured again next time" in notes[1]
    assert not list((cache / "kernels").glob("plan-*.json"))
    monkeypatch.setattr(cpuplan, "process_cpu_s", lambda: 0.0 if next(clock) % 2 == 0 else 1e6)  # all its share
    again = use_cpu_fast_paths(model_64(), notes.append)
    assert again.how == "measured" and not cpuplan.busy(again)
    saved = list((cache / "kernels").glob("plan-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["cpu_share"] == again.cpu_share
