"""CE-NAS on CIFAR-10: the DARTS cell space searched with a supernet's scores and real training.

``problem``: the space as a ``cluster.problem.Problem`` (candidates sampled as the search goes, scored
by the supernet, trained from scratch in resumable segments); ``jobs``: the training job a backend
runs; ``config`` and ``experiment``: ``run(config, workdir)`` behind ``experiments.cifar_search``.
"""
