"""``cpixelcnn train``: train a model into a run directory (every setting is a TrainConfig field)."""

from __future__ import annotations

import sys

NAME, HELP = "train", "train a model; writes a run directory"


def add_arguments(p) -> None:
    from cpixelcnn.training.config import add_arguments as config_arguments
    from cpixelcnn.training.presets import PRESETS

    config_arguments(p, with_defaults=False)  # one declaration per setting; what is not given is absent (defaults or a preset fill it)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a published recipe; it fills in the settings not given on the command line")


def run(args) -> int:
    from cpixelcnn.training import TrainingInterrupted, train
    from cpixelcnn.training.config import from_arguments, given_settings
    from cpixelcnn.training.distributed import StopSignals, is_main_process, record_for_torchrun
    from cpixelcnn.training.errors import REQUEUE_STATUS, TrainingPreempted
    from cpixelcnn.training.presets import describe_preset, preset_settings

    given = given_settings(args)
    if args.preset:
        filled = preset_settings(args.preset, given)
        for name, value in filled.items():
            setattr(args, name, value)
        print(describe_preset(args.preset, filled, given))
    try:
        with StopSignals(until_exit=True):  # a rank that stops is not killed while it says so, nor after
            train(from_arguments(args), asked=given)
    except (TrainingInterrupted, TrainingPreempted) as err:  # every rank stopped; rank 0 says so
        if is_main_process():
            print(f"cpixelcnn: {err}", file=sys.stderr)
        record_for_torchrun(f"cpixelcnn: {err}")
        return 130 if isinstance(err, TrainingInterrupted) else REQUEUE_STATUS
    return 0
