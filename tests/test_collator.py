import pytest
import torch

from gpt2chat import DialogueCollator


def examples():
    return [
        {"input_ids": [5, 6, 7], "token_type_ids": [1, 1, 2], "labels": [-100, 6, 7], "length": 3},
        {"input_ids": [8], "token_type_ids": [2], "labels": [8], "source": "x"},
    ]


def test_pads_right_with_minus_100_labels():
    batch = DialogueCollator(pad_token_id=0)(examples())
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[1, 1, 2], [2, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(v.dtype == torch.long for v in batch.values())


def test_eos_equal_to_pad_is_still_learned():
    """GPT-2's pad is its eos: the label of a real eos must survive padding."""
    eos = 50256
    batch = DialogueCollator(pad_token_id=eos)(
        [
            {"input_ids": [1, eos], "labels": [-100, eos]},
            {"input_ids": [1, 2, 3, eos], "labels": [-100, 2, 3, eos]},
        ]
    )
    assert batch["labels"].tolist() == [[-100, eos, -100, -100], [-100, 2, 3, eos]]


def test_pad_to_multiple_left_and_no_token_types():
    c = DialogueCollator(
        pad_token_id=0, pad_to_multiple_of=4, padding_side="left", return_token_type_ids=False
    )
    batch = c(examples())
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert "token_type_ids" not in batch


def test_errors():
    with pytest.raises(ValueError, match="padding_side"):
        DialogueCollator(pad_token_id=0, padding_side="middle")
    with pytest.raises(ValueError, match="max_length=2"):
        DialogueCollator(pad_token_id=0, max_length=2)(examples())
    with pytest.raises(ValueError, match="empty batch"):
        DialogueCollator(pad_token_id=0)([])
