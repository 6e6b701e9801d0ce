"""trainlab: train neural-network image classifiers the way the "Training Neural Networks" lectures teach."""
__version__ = "0.1.0"
