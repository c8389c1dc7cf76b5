"""Corpus BLEU of generated replies against references, computed by sacrebleu.

An ``evaluate`` metric module shipped with gpt2chat; load it offline by path::

    import evaluate
    from gpt2chat.evaluation import metric_path

    bleu = evaluate.load(metric_path("bleu"))
    bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on a mat"])
"""

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{post-2018-call,
  title = "A Call for Clarity in Reporting {BLEU} Scores",
  author = "Post, Matt",
  booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
  year = "2018",
  pages = "186--191",
}
"""

_DESCRIPTION = """\
Corpus-level BLEU (0 to 100) from sacrebleu's default settings (13a tokenisation, exponential
smoothing off, case-sensitive unless lowercase=True). Every prediction has one reference, or
the same number of references.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated replies.
    references (`list` of `str`, or `list` of `list` of `str`): reference replies.
    lowercase (`bool`): compare lower-cased text. Defaults to False.
    smooth_method (`str`): sacrebleu smoothing: 'exp' (default), 'floor', 'add-k' or 'none'.
Returns:
    bleu (`float`): corpus BLEU, 0 to 100. precisions (`list` of `float`): n-gram precisions.
    brevity_penalty (`float`), sys_len (`int`), ref_len (`int`).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
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
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, lowercase=False, smooth_method="exp"):
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        n_refs = {len(r) for r in refs}
        if len(n_refs) > 1:
            raise ValueError("Every prediction needs the same number of references.")
        k = n_refs.pop() if n_refs else 1
        transposed = [[r[i] for r in refs] for i in range(k)]
        score = sacrebleu.corpus_bleu(
            predictions, transposed, lowercase=lowercase, smooth_method=smooth_method
        )
        return {
            "bleu": score.score,
            "precisions": list(score.precisions),
            "brevity_penalty": score.bp,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
        }
