"""From pictures to label maps: preprocessing, the prediction engine and the :class:`Prediction` result."""
