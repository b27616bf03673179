"""Downstream task accuracy through EleutherAI's lm-evaluation-harness (the ``eval`` extra).

``config``     the ``tasks`` section (standard library only: ``rewarm check`` stays fast)
``harness``    importing lm-eval, finding and loading tasks (unknown names, unreachable data: clear errors)
``adapter``    ``RankShardedLM``: lm-eval's HFLM on a model in memory, its requests split over the ranks
``results``    lm-eval results -> ``task/<task>/<metric>`` keys; the metrics.csv columns
``evaluator``  ``TaskEvaluator``: one evaluation that leaves the model, its mode and the RNG streams untouched
``callback``   the in-loop hook (Lightning callback): step 0, every ``tasks.every_steps``, the end
``demo_tasks`` the demo's two local multiple-choice tasks, built from its own corpora
``bars``       lm-eval's (and its datasets') progress bars, off where stderr is not a terminal
Nothing heavy is imported here."""
