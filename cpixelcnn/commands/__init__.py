"""The commands of ``cpixelcnn``, one module each: ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit status`` together (``OWN_CHECKS``: the options a command range-checks itself,
``"all"`` for train, whose settings TrainConfig checks). :data:`COMMANDS` lists them in the order
``cpixelcnn --help`` shows them; a new command is a module here and one entry in that list."""

from cpixelcnn.commands import bench, cache, classify, complete, demo, doctor, evaluate, import_checkpoint, sample, score, train

COMMANDS = (train, sample, complete, classify, evaluate, score, demo, bench, doctor, import_checkpoint, cache)
