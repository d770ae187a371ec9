"""Lightning callbacks: the best checkpoint and the explanation of the test loop."""
from .checkpoint import BestCheckpoint
from .explain import ExplainCallback

__all__ = ["BestCheckpoint", "ExplainCallback"]
