"""One process or many (torchrun): the ranks, the device of this rank, and the few decisions all
ranks must agree on (whether a step is finite, whether the time limit is reached)."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import torch

from cpixelcnn.devices import resolve_device
from cpixelcnn.stopping import StopSignals  # noqa: F401  (its home is below the data and the likelihood loop)


def init_process_group(ranks: Ranks, restart: int) -> None:
    """The default process group of this torchrun job (gloo, or nccl on GPUs).

    torchrun's static rendezvous (its default) keeps one store for all its attempts, and the
    process group's keys carry no attempt: after a restart the new ranks read the addresses the
    dead ranks of the first attempt left there and never connect ("Connection refused", or a
    hang). The group's keys are put under the attempt here."""
    backend = "nccl" if ranks.on.type == "cuda" else "gloo"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        torch.distributed.init_process_group(backend)
        return
    from torch.distributed.constants import default_pg_timeout

    store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ranks.world, is_master=False, timeout=default_pg_timeout
    )
    store = torch.distributed.PrefixStore(f"cpixelcnn/attempt-{restart}", store)
    torch.distributed.init_process_group(backend, store=store, rank=ranks.rank, world_size=ranks.world)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a single process."""
    return os.environ.get("RANK", "0") == "0"


class Ranks:
    """torchrun's environment, or a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        self.on = torch.device("cpu")  # where collectives' tensors live (nccl needs CUDA ones)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device this rank trains on: one GPU per torchrun process."""
        device = resolve_device(name)
        if device.type == "cuda" and self.active:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.on = device
        return device

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks (itself in a single process)."""
        if not self.active:
            return value
        value = value.clone()
        torch.distributed.all_reduce(value)
        return value / self.world

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank."""
        value = torch.tensor([float(flag)], device=self.on)
        if self.active:
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """For each flag, whether it holds on any rank: one collective for all of them."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        value = torch.tensor([float(f) for f in flags], device=self.on)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return tuple(bool(v) for v in value.tolist())

    def main_says(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (so all stop at the same step)."""
        value = torch.tensor([float(flag)], device=self.on)
        if self.active:
            torch.distributed.broadcast(value, src=0)
        return bool(value.item())


# -- errors under torchrun: said once, by the rank that found them --------------------------------

ERRORS_KEY = "cpixelcnn/errors"  # in the job's store: how many ranks have reported an error of their own
_PEER_FAILURE_MARKS = (
    "third_party/gloo",
    "ProcessGroupGloo",
    "ProcessGroupNCCL",
    "NCCL error",
    "Connection reset by peer",
    "Connection closed by peer",
    "connectFullMesh",
)


def peer_failure(err: BaseException) -> bool:
    """Whether ``err`` came from a collective because another rank went away (that rank's own
    error is the one worth reading)."""
    backend_error = getattr(torch.distributed, "DistBackendError", None)
    if backend_error is not None and isinstance(err, backend_error):
        return True
    return isinstance(err, RuntimeError) and any(mark in str(err) for mark in _PEER_FAILURE_MARKS)


def choose_reporter(err: BaseException, ranks: Ranks) -> None:
    """Under torchrun, mark ``err`` quiet (``err.quiet = True``) on every rank but the one that
    reports it: before the process group exists (the same checks fail alike everywhere) rank 0;
    after, the first rank whose error is its own (the job's store counts them), and a rank whose
    error only says a peer went away when no other rank reported within a few seconds."""
    if not ranks.active:
        return
    store = _default_store()
    if store is None:
        quiet = not ranks.is_main
    elif peer_failure(err):
        try:
            store.wait([ERRORS_KEY], timedelta(seconds=5))
            quiet = True
        except Exception:  # noqa: BLE001 - nobody else said anything: this is all there is to say
            quiet = False
    else:
        try:
            quiet = store.add(ERRORS_KEY, 1) != 1
        except Exception:  # noqa: BLE001 - the store is gone with the job: say it
            quiet = False
    try:
        err.quiet = quiet
        if peer_failure(err):
            err.summary = f"another process of this torchrun job went away ({str(err).strip().splitlines()[0]})"
    except AttributeError:
        pass


def _default_store():
    try:
        if torch.distributed.is_initialized():
            return torch.distributed.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - a torch without it: every rank speaks
        pass
    return None


def record_for_torchrun(message: str) -> None:
    """Write ``message`` where torchrun looks for a failed worker's reason (``TORCHELASTIC_ERROR_FILE``,
    the format of torch.distributed.elastic's ErrorHandler): its summary then names it instead of <N/A>."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w") as f:
            json.dump({"message": {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}}, f)
    except OSError:
        pass
