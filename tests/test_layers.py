"""The model-structure adapter (docs/methods.md#the-block-by-block-pruning-pass): block discovery, block-0
input capture and block-by-block replay, on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, make_tiny_model

from dlp_lib.config import ConfigError
from dlp_lib.layers import (
    BlockInputs,
    UnsupportedArchitectureError,
    architecture,
    block_output,
    blocks_replaced,
    capture_block_inputs,
    decoder_blocks,
    linear_sublayers,
    move_non_block_modules,
    run_block,
)

LLAMA_LINEARS = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]
OPT_LINEARS = ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj", "fc1", "fc2"]
EXPECTED_LINEARS = {"llama": LLAMA_LINEARS, "mistral": LLAMA_LINEARS, "qwen2": LLAMA_LINEARS, "opt": OPT_LINEARS}


def _ids(n=6, tokens=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (n, tokens), generator=g)


def _final_norm(model):
    return model.model.decoder.final_layer_norm if architecture(model) == "opt" else model.model.norm


def _same(a, b) -> bool:
    """Exact equality of captured keyword values (tensors, tuples of tensors, plain values)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------ discovery
@pytest.mark.parametrize("arch", ARCHS)
def test_block_discovery_per_architecture(arch):
    model = make_tiny_model(arch)
    assert architecture(model) == arch
    blocks = decoder_blocks(model)
    assert len(blocks) == 3
    expected_container = model.model.decoder.layers if arch == "opt" else model.model.layers
    assert blocks is expected_container
    for block in blocks:
        linears = linear_sublayers(block)
        assert list(linears) == EXPECTED_LINEARS[arch]
        assert all(isinstance(m, torch.nn.Linear) for m in linears.values())
    # distinct blocks have distinct modules
    assert (
        linear_sublayers(blocks[0])[EXPECTED_LINEARS[arch][0]]
        is not linear_sublayers(blocks[1])[EXPECTED_LINEARS[arch][0]]
    )


def test_lm_head_and_embeddings_are_not_block_linears():
    model = make_tiny_model("llama")
    found = {id(m) for b in decoder_blocks(model) for m in linear_sublayers(b).values()}
    assert id(model.lm_head) not in found
    assert len(found) == 3 * 7


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    with pytest.raises(UnsupportedArchitectureError) as info:
        decoder_blocks(model)
    message = str(info.value)
    assert "gpt2" in message
    for name in ("llama", "mistral", "opt", "qwen2"):
        assert name in message
    assert isinstance(info.value, ConfigError)
    with pytest.raises(UnsupportedArchitectureError):
        capture_block_inputs(model, torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_discovery_ignores_model_name_or_path(arch):
    model = make_tiny_model(arch)
    expected = decoder_blocks(model)
    model.name_or_path = "/opt/models/llama-7b"
    model.config._name_or_path = "/opt/models/llama-7b"
    assert architecture(model) == arch
    assert decoder_blocks(model) is expected
    assert list(linear_sublayers(decoder_blocks(model)[0])) == EXPECTED_LINEARS[arch]


# ------------------------------------------------------------------------------ capture and replay
def test_capture_hidden_states_equal_embedding_output(tiny_model):
    ids = _ids()
    inputs = capture_block_inputs(tiny_model, ids, batch_size=4)
    assert isinstance(inputs, BlockInputs)
    assert len(inputs) == 2 and inputs.num_windows == 6
    assert [h.shape[0] for h in inputs.hidden] == [4, 2]
    captured = torch.cat(inputs.hidden)
    with torch.no_grad():
        reference = tiny_model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[0]
    assert torch.equal(captured, reference)
    if architecture(tiny_model) != "opt":  # LLaMA-like: block 0 sees the plain token embeddings
        with torch.no_grad():
            assert torch.equal(captured, tiny_model.get_input_embeddings()(ids))


def test_capture_keeps_all_keyword_arguments(tiny_model):
    ids = _ids(n=3)
    seen = []
    block0 = decoder_blocks(tiny_model)[0]
    handle = block0.register_forward_pre_hook(lambda mod, args, kw: seen.append(dict(kw)), with_kwargs=True)
    try:
        with torch.no_grad():
            tiny_model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    inputs = capture_block_inputs(tiny_model, ids, batch_size=3)
    (captured,) = inputs.kwargs
    expected = {k: v for k, v in seen[0].items() if k != "past_key_values"}
    assert "past_key_values" not in captured
    assert captured["use_cache"] is False
    assert set(expected) <= set(captured)
    for key, value in expected.items():
        assert _same(captured[key], value), key
    if architecture(tiny_model) != "opt":  # rotary embeddings are passed to the layers in transformers 5
        assert "position_embeddings" in captured


def test_replay_reproduces_final_hidden_state(tiny_model):
    ids = _ids()
    blocks = decoder_blocks(tiny_model)
    pre_norm = []
    handle = _final_norm(tiny_model).register_forward_pre_hook(lambda mod, args: pre_norm.append(args[0]))
    try:
        with torch.no_grad():
            out = tiny_model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    inputs = capture_block_inputs(tiny_model, ids, batch_size=4)
    hidden = inputs.hidden
    for index, block in enumerate(blocks):
        hidden = [run_block(block, h, kw) for h, kw in zip(hidden, inputs.kwargs)]
        if index + 1 < len(blocks):  # hidden_states[i] is the input of block i
            torch.testing.assert_close(torch.cat(hidden), out.hidden_states[index + 1], rtol=1e-5, atol=1e-6)
    final = torch.cat(hidden)
    torch.testing.assert_close(final, pre_norm[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(_final_norm(tiny_model)(final), out.hidden_states[-1], rtol=1e-5, atol=1e-6)
    # and the blocks do change the hidden state (the comparison above is not vacuous)
    assert not torch.allclose(final, torch.cat(inputs.hidden), atol=1e-3)


def test_capture_removes_hook_and_restores_use_cache(tiny_model):
    block0 = decoder_blocks(tiny_model)[0]
    tiny_model.config.use_cache = True
    capture_block_inputs(tiny_model, _ids(n=2), batch_size=1)
    assert len(block0._forward_pre_hooks) == 0
    assert tiny_model.config.use_cache is True
    with torch.no_grad():  # a normal forward now runs to the end
        logits = tiny_model(input_ids=_ids(n=1)).logits
    assert logits.shape == (1, 12, 128)


def test_capture_removes_hook_when_the_forward_fails():
    model = make_tiny_model("llama")
    block0 = decoder_blocks(model)[0]
    model.config.use_cache = True
    bad = _ids(n=3)
    bad[2, 0] = 10_000  # out of the vocabulary: the embedding of the second batch fails
    with pytest.raises(IndexError):
        capture_block_inputs(model, bad, batch_size=2)
    assert len(block0._forward_pre_hooks) == 0
    assert len(block0._forward_pre_hooks_with_kwargs) == 0
    assert model.config.use_cache is True
    with torch.no_grad():
        assert model(input_ids=_ids(n=1)).logits.shape == (1, 12, 128)


def test_block_output_tuple_and_tensor():
    t = torch.randn(2, 3)
    assert block_output(t) is t
    assert block_output((t, None)) is t
    assert block_output([t, torch.zeros(1)]) is t


def test_batch_size_does_not_change_captured_hidden_states(tiny_model):
    ids = _ids(n=6)
    one = capture_block_inputs(tiny_model, ids, batch_size=1)
    three = capture_block_inputs(tiny_model, ids, batch_size=3)
    assert len(one) == 6 and len(three) == 2
    assert one.num_windows == three.num_windows == 6
    assert torch.equal(torch.cat(one.hidden), torch.cat(three.hidden))
    # replaying block 0 gives the same outputs whatever the batch size
    block0 = decoder_blocks(tiny_model)[0]
    out_one = torch.cat([run_block(block0, h, kw) for h, kw in zip(one.hidden, one.kwargs)])
    out_three = torch.cat([run_block(block0, h, kw) for h, kw in zip(three.hidden, three.kwargs)])
    torch.testing.assert_close(out_one, out_three, rtol=1e-5, atol=1e-6)


def test_batches_rejects_non_positive_batch_size():
    model = make_tiny_model("llama")
    with pytest.raises(ConfigError):
        capture_block_inputs(model, _ids(n=2), batch_size=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_replaced_swaps_the_block_list_and_always_puts_it_back(arch):
    model = make_tiny_model(arch)
    blocks = decoder_blocks(model)
    with blocks_replaced(model, torch.nn.ModuleList(blocks[:1])) as original:
        assert original is blocks and len(decoder_blocks(model)) == 1
    assert decoder_blocks(model) is blocks
    with pytest.raises(RuntimeError), blocks_replaced(model, torch.nn.ModuleList()):
        raise RuntimeError("a failure inside")
    assert decoder_blocks(model) is blocks


def test_blocks_replaced_reaches_the_blocks_through_a_peft_wrapper():
    """As decoder_blocks does; before, moving a LoRA-adapted model's non-block modules (offloading) raised
    AttributeError: 'LlamaForCausalLM' object has no attribute 'layers'."""
    peft = pytest.importorskip("peft")
    model = make_tiny_model("llama")
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    blocks = decoder_blocks(wrapped)
    with blocks_replaced(wrapped, torch.nn.ModuleList()):
        assert len(decoder_blocks(wrapped)) == 0
    assert decoder_blocks(wrapped) is blocks
    move_non_block_modules(wrapped, "cpu")
    assert decoder_blocks(wrapped) is blocks
