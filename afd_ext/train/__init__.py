"""Train the AFD module of a frozen classifier on any folders of photos (no labels needed): ``afd train``,
``train(TrainConfig(...))`` (docs/design.md §1).

    config       TrainConfig (the recipe, its defaults and checks), INT_RANGES, the classifier's precision
    dataset      the hold-out split, CompressedPairs (a clean crop and its degraded copy, the mixture of
                 degradations), the gate's target per sample
    losses       afd_loss (L1 to the clean features, KL to the clean logits, cross-entropy, the gate's
                 loss), the learning-rate schedule
    run_folder   the output folder: the lock, stale temporaries, the JSON Lines / CSV logs, the resume checks
    phases       the profiler ranges of a step (STEP_RANGES) and PHASE_CLOCK (set it on this module)
    loop         build_training / train_step (one step, the frozen classifier it runs) and train (the loop)
    lineage      what a checkpoint's training and everything it started from held out (lineage_record,
                 held_out_by_lineage)
    gate_fit     refit_gate (``afd fit-gate``): the whole-image gate's head fitted alone, by logistic
                 regression on the protocols' inputs from training photos
    average      average_checkpoints (``afd average``): the weighted mean of checkpoints of one lineage
    widen        widen_checkpoint / widen_afd (``afd widen``): a wider FE-Net computing the same function

Every public name is importable from ``afd_ext.train`` (``afd_ext.train.CSV_COLUMNS``,
``afd_ext.train.INT_RANGES``, ...; ``afd_ext.train`` as an attribute of the package is the function).
"""
from .average import average_checkpoints
from .config import AUTOCAST_CHOICES, INT_RANGES, MAX_COUNT, TrainConfig, classifier_precision
from .dataset import (GATE_CLOSED_FROM, GATE_OPEN_UP_TO, NO_GATE_TARGET, CompressedPairs, gate_target,
                      split_files)
from .gate_fit import fit_gate_head, gate_samples, refit_gate
from .lineage import held_out_by_lineage, lineage_record
from .losses import afd_loss
from .loop import (TrainingDiverged, TrainingRun, build_training, frozen_step_model, held_out_top1, train,
                   train_step)
from .phases import STEP_RANGES
from .run_folder import (CSV_COLUMNS, LOCK_NAME, RESUME_MAY_CHANGE, RUN_FILES, OutputLocked, clean_stale_tmp,
                         csv_row, lock_output, portable_path)
from .widen import widen_afd, widen_checkpoint

__all__ = ["AUTOCAST_CHOICES", "INT_RANGES", "MAX_COUNT", "TrainConfig", "classifier_precision", "GATE_CLOSED_FROM",
           "GATE_OPEN_UP_TO", "NO_GATE_TARGET", "CompressedPairs", "gate_target", "split_files", "fit_gate_head",
           "gate_samples", "refit_gate", "average_checkpoints", "held_out_by_lineage", "lineage_record", "afd_loss",
           "TrainingDiverged", "TrainingRun", "build_training", "frozen_step_model", "held_out_top1", "train",
           "train_step", "STEP_RANGES", "CSV_COLUMNS", "LOCK_NAME", "RESUME_MAY_CHANGE", "RUN_FILES", "OutputLocked",
           "clean_stale_tmp", "csv_row", "lock_output", "portable_path", "widen_afd", "widen_checkpoint"]
