"""``cpixelcnn doctor``: versions, device, compiled pieces, and a self-check of every fast path."""

from __future__ import annotations

NAME, HELP = "doctor", "versions, device, compiled pieces, and a self-check of every fast path against the eager reference"


def add_arguments(p) -> None:
    from cpixelcnn.doctor import add_arguments as doctor_arguments

    doctor_arguments(p)


def run(args) -> int:
    from cpixelcnn import doctor

    return doctor.run_command(args)
