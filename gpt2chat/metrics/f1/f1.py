"""Unigram F1 between generated and reference replies, with ParlAI's answer normalisation.

An ``evaluate`` metric module shipped with gpt2chat; load it offline by path::

    import evaluate
    from gpt2chat.evaluation import metric_path

    f1 = evaluate.load(metric_path("f1"))
    f1.compute(predictions=["The cat sat."], references=["a cat sat down"])
"""

import re
from collections import Counter

import datasets
import evaluate

_CITATION = """\
@inproceedings{miller2017parlai,
  title={ParlAI: A Dialog Research Software Platform},
  author={Miller, Alexander H. and Feng, Will and Fisch, Adam and Lu, Jiasen and Batra, Dhruv
          and Bordes, Antoine and Parikh, Devi and Weston, Jason},
  booktitle={EMNLP System Demonstrations},
  year={2017}
}
"""

_DESCRIPTION = """\
Unigram F1 as ParlAI computes it for dialogue: both texts are normalised (lower case,
punctuation replaced by spaces, the articles a/an/the removed, whitespace collapsed), split on
whitespace, and F1 is computed from the multiset overlap of their tokens. With several
references, the best F1 over them counts. The score is the mean over examples (0 to 1).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated replies.
    references (`list` of `str`, or `list` of `list` of `str`): reference replies.
Returns:
    f1 (`float`): mean unigram F1. precision (`float`), recall (`float`): their means.
Examples:
    >>> f1 = evaluate.load("f1.py")
    >>> f1.compute(predictions=["the cat sat"], references=["a cat sat down"])
    {'f1': 0.8, 'precision': 1.0, 'recall': 0.6666666666666666}
"""

RE_ART = re.compile(r"\b(a|an|the)\b")
RE_PUNC = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\]\\^`{|}~_']")


def normalize_answer(text: str) -> str:
    """ParlAI's ``normalize_answer``: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = RE_PUNC.sub(" ", text)
    text = RE_ART.sub(" ", text)
    return " ".join(text.split())


def prec_recall_f1(prediction: str, reference: str) -> tuple[float, float, float]:
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision = same / len(pred)
    recall = same / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
            ],
            reference_urls=["https://github.com/facebookresearch/ParlAI"],
        )

    def _compute(self, predictions, references):
        if not predictions:
            return {"f1": 0.0, "precision": 0.0, "recall": 0.0}
        totals = [0.0, 0.0, 0.0]
        for pred, refs in zip(predictions, references):
            refs = [refs] if isinstance(refs, str) else list(refs)
            best = max((prec_recall_f1(pred, r) for r in refs), key=lambda s: s[2])
            for i in range(3):
                totals[i] += best[i]
        n = len(predictions)
        return {"f1": totals[2] / n, "precision": totals[0] / n, "recall": totals[1] / n}
