"""DSA's allocation search: expressions, cached candidates, the model's fitness, the evolution.

An expression ``W:(PRE,...)-(REDUCTION)-(POST,...)`` maps one block's Wanda scores to one number and
the DSA template (``allocation.allocate``) turns the numbers into block densities. DSA's paper finds
the expression by evolution, with the pruned model's perplexity as fitness; its public code only
samples expressions at random. Here::

    population ──► fitness of each new expression: allocate from the dense statistics (computed once),
    prune with the chosen pruner at the target sparsity, perplexity on *search windows* drawn from the
    calibration side (never the evaluation text); cached on disk per expression
    ──► elites + children (tournament selection, crossover of the three fields, mutation of one op,
    no expression evaluated twice) ──► next generation

An expression that is not finite on some block, or that pushes a block's density outside (0, 1], has
fitness +inf and its reason is kept. Two expressions with the same densities (``ABS`` on non-negative
scores, say) share one evaluation. The random generator is seeded and consumed only by the evolution,
so the same seed and cache give the same populations and result, and a killed search re-run with the
same settings reads what it had evaluated from the cache and carries on.

Example::

    from dlp_lib.search import FitnessSettings, ProxyFitness, SearchConfig, search
    fitness = ProxyFitness(FitnessSettings(method="wanda", sparsity=0.7, nsamples=4, seqlen=128, windows=4))
    result = search(fitness, SearchConfig(population=8, generations=5, seed=0))
    print(result.best.expression, result.best.fitness)  # use with: dlp-prune --allocation dsa --dsa_graph ...
"""

from ..config import DSA_README_GRAPH  # noqa: F401  (the expression DSA's README gives)
from .candidates import (  # noqa: F401
    OP_REVISIONS,
    CachedFitness,
    Candidate,
)
from .evolution import (  # noqa: F401
    MAX_GENERATIONS,
    MAX_POPULATION,
    SearchConfig,
    SearchResult,
    load_result,
    save_result,
    search,
)
from .expressions import (  # noqa: F401
    POST_OPS,
    PRE_OPS,
    REDUCTIONS,
    WINDOW_SEED_OFFSET,
    Expression,
    ExpressionSpace,
)
from .fitness import (  # noqa: F401
    FitnessSettings,
    ProxyFitness,
)
