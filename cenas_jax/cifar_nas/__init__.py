"""CE-NAS on CIFAR-10: the DARTS cell space searched with a supernet's scores and real training.

``problem``: the space as a ``cluster.problem.Problem`` (candidates sampled as the search goes, scored
by the supernet, trained from scratch in resumable segments); ``jobs``: the data split and the
training and export jobs a backend runs; ``sampling``: device prices, the supernet and its scores;
``outputs``: summary, results, figures, exported architectures; ``config`` and ``experiment``:
``run(config, workdir)`` behind ``experiments.cifar_search``; ``projection``: a configuration's
predicted cost before it runs.
"""
