"""Evaluation on the datasets as distributed: the run (:mod:`.runner`, ``resnest_zoo.evaluate``) and its result
(:mod:`.result`); the metric is :mod:`resnest_zoo.metric` (below this layer, so that INT8 accuracy control in
:mod:`resnest_zoo.deploy.int8` measures with it too)."""
