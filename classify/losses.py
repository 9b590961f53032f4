"""The training losses by name (moved to features.losses, which extract's fine-tuning shares); re-exported here
for the heads and their callers."""
from features.losses import DEFAULT_LOSS, LOSSES, check_loss, class_weights, label_weights, make_loss

__all__ = ["DEFAULT_LOSS", "LOSSES", "check_loss", "class_weights", "label_weights", "make_loss"]
