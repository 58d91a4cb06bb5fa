"""Host-side planning of a synthesis batch: sub-batch rows, their capacities, one upload.

The simulator draws a batch's random numbers on the host, so the host knows, without
asking the device, which samples are rotated, which get an anomaly and which operation
each one drew at each position. Each operation then runs on the sub-batch of the samples
that drew it. :func:`pad_rows` gives a sub-batch its rows: exactly its members (sparse
mode), or its members padded up to a fixed capacity (dense mode): the next power of two
or the next multiple of ceil(B / 4), whichever is smaller, and at most the batch size B.
So a function sees only a handful of batch sizes (1, 2, 4, 6, 8 for B = 8; 1, 2, 4, 8,
16, 24, 32 for B = 32; at most 12 for any B up to 256), and ``torch.compile`` a few
static shapes, while padding stays small both for the sub-batch of the anomalous ~half
of a batch (multiples of B / 4: 17 rows of 32 take 24, not 32) and for that of one
augmentation at one position, which holds about B / 20 samples (powers of two: at most
doubled, where multiples of B / 4 alone would pad it five-fold). Padding repeats the
first member: its duplicate rows compute, and write back, the very same values, so the
result does not depend on the padding.

:class:`Upload` gathers every host tensor a batch needs on the device (row indices and
the parameters of each sub-batch) and sends them in one non-blocking copy per dtype
(pinned first on CUDA), so the host never waits for the device. :func:`take_rows` and
:func:`put_rows` move a sub-batch's rows out of and back into a batch.
"""

from __future__ import annotations

import torch


def capacity(n: int, batch: int) -> int:
    """The size a sub-batch of ``n`` (>= 1) rows of a batch of ``batch`` is padded to in dense mode."""
    quarter = -(-batch // 4)
    return min(1 << (n - 1).bit_length(), -(-n // quarter) * quarter, batch)


def pad_rows(members: list[int], batch: int | None) -> list[int]:
    """``members`` (non-empty) of a batch of ``batch`` rows, padded with copies of the first up to their
    :func:`capacity`; ``batch=None`` (sparse mode): as they are."""
    if batch is None:
        return members
    return members + members[:1] * (capacity(len(members), batch) - len(members))


class Upload:
    """Host tensors bound for one device, sent together: one copy per dtype."""

    def __init__(self) -> None:
        self.parts: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor | list) -> None:
        if key in self.parts:
            raise KeyError(f"{key} is already in this upload")
        self.parts[key] = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.long)

    def send(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Every tensor, on ``device``: views into one flat tensor per dtype."""
        out: dict[str, torch.Tensor] = {}
        by_dtype: dict[torch.dtype, list[str]] = {}
        for key, value in self.parts.items():
            by_dtype.setdefault(value.dtype, []).append(key)
        for keys in by_dtype.values():
            flat = torch.cat([self.parts[k].reshape(-1) for k in keys])
            if device.type == "cuda":  # pinned: the copy is truly asynchronous (and safe: the allocator waits)
                flat = flat.pin_memory()
            flat = flat.to(device, non_blocking=True)
            start = 0
            for k in keys:
                shape = self.parts[k].shape
                n = self.parts[k].numel()
                out[k] = flat[start: start + n].view(shape)
                start += n
        return out


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]``, a new tensor (``rows``: an index tensor on ``x``'s device)."""
    if x.device.type == "cpu":  # copying row by row: half the time of index_select on a CPU
        return torch.stack([x[j] for j in rows.tolist()])
    return x.index_select(0, rows)


def put_rows(x: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``x[rows] = values``, in place (a repeated row must get the same values each time)."""
    if x.device.type == "cpu":  # row by row: a CPU's index_copy_ takes 4 to 10 times as long
        for i, j in enumerate(rows.tolist()):
            x[j].copy_(values[i])
        return x
    return x.index_copy_(0, rows, values)
