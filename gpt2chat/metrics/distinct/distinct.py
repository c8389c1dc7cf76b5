"""Distinct-n (Li et al., 2016): the diversity of generated replies.

An ``evaluate`` metric module shipped with gpt2chat; load it offline by path::

    import evaluate
    from gpt2chat.evaluation import metric_path

    distinct = evaluate.load(metric_path("distinct"))
    distinct.compute(predictions=["i am fine", "i am good"])
"""

import re

import datasets
import evaluate

_CITATION = """\
@inproceedings{li-etal-2016-diversity,
  title = "A Diversity-Promoting Objective Function for Neural Conversation Models",
  author = "Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill",
  booktitle = "Proceedings of NAACL-HLT",
  year = "2016",
  pages = "110--119",
}
"""

_DESCRIPTION = """\
Distinct-n is the number of distinct n-grams divided by the total number of n-grams over all
predictions (corpus level). Text is lower-cased and split into words and punctuation marks.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated replies.
    max_n (`int`): report distinct-1 ... distinct-max_n. Defaults to 2.
Returns:
    distinct_1, distinct_2, ... (`float`): 0 to 1 (0 when there is no n-gram).
Examples:
    >>> distinct = evaluate.load("distinct.py")
    >>> distinct.compute(predictions=["i am fine", "i am good"])
    {'distinct_1': 0.6666666666666666, 'distinct_2': 0.75}
"""

TOKEN = re.compile(r"\w+|[^\w\s]")


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Distinct(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://aclanthology.org/N16-1014/"],
        )

    def _compute(self, predictions, max_n=2):
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}.")
        tokenized = [TOKEN.findall(p.lower()) for p in predictions]
        out = {}
        for n in range(1, max_n + 1):
            grams = [g for toks in tokenized for g in ngrams(toks, n)]
            out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
        return out
