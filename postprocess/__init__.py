"""Post-processing of per-frame scores per video: gap filling, box-filter smoothing and the k sweep, per-AU
thresholds, honest (cross-validated) selection and the sweep's tuning, plots, the scores file, the run's
postprocess.json (config) and challenge submissions.

Imports only `features`. Rows are always ordered by (video, frame) with each video's rows contiguous; a split of
scores covers every frame of its videos (`timeline`), so smoothing windows count frames on every split.
"""
from .gaps import extend_to_samples, fill_gaps
from .scores import ScoreSet, load_scores, save_scores
from .segments import Segments, video_segments
from .selection import Selection, cross_validated_selection
from .smoothing import BoxSmoother, box_filter
from .submission import read_sample_list, validate_submission, write_submission
from .sweep import best_k, per_output_k, sweep_k, tune_au_k_thresholds, tune_expr_class_k
from .thresholds import Thresholds, compare_thresholds, tune_thresholds
from .timeline import extend_timeline, filled_scores, full_timeline, smoothed_scores

__all__ = [
    "extend_to_samples", "fill_gaps", "ScoreSet", "load_scores", "save_scores", "Segments", "video_segments",
    "Selection", "cross_validated_selection", "BoxSmoother", "box_filter", "read_sample_list",
    "validate_submission", "write_submission", "best_k", "per_output_k", "sweep_k", "tune_au_k_thresholds",
    "tune_expr_class_k",
    "Thresholds", "compare_thresholds", "tune_thresholds", "extend_timeline", "filled_scores", "full_timeline",
    "smoothed_scores",
]
