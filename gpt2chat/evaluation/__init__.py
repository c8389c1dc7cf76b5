"""What ``gpt2chat eval`` measures: token-weighted perplexity per dataset and overall, and, on
replies generated for a sample of contexts, unigram F1, BLEU and distinct-1/2.

- :mod:`~gpt2chat.evaluation.runner`: :func:`evaluate_model` and its :class:`EvalSettings`;
- :mod:`~gpt2chat.evaluation.perplexity`: the per-token NLL shared with the trainer;
- :mod:`~gpt2chat.evaluation.generation`: the sampled contexts and the generated replies;
- :mod:`~gpt2chat.evaluation.report`: :class:`EvalReport` and the shipped metric modules.
"""

from .generation import generate_replies, reply_contexts
from .perplexity import token_nll
from .report import EvalReport, EvalRow, load_metric, metric_path
from .runner import EvalSettings, evaluate_model

__all__ = [
    "EvalReport",
    "EvalRow",
    "EvalSettings",
    "evaluate_model",
    "generate_replies",
    "load_metric",
    "metric_path",
    "reply_contexts",
    "token_nll",
]
