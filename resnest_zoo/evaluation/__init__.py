"""Evaluation on the datasets as distributed: the reference's metric (:mod:`.metric`), the run (:mod:`.runner`,
``resnest_zoo.evaluate``) and its result (:mod:`.result`)."""
