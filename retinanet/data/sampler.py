"""The resumable training sampler: data order and augmentation seeds as a pure function of the stream position.

Data order and each sample's augmentation seed depend only on ``(seed, epoch, position in the epoch)``, so a
resumed run sees exactly the batches an uninterrupted run would, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from retinanet.data.coco_json import DataError


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed of the sample at ``position`` of ``epoch``'s stream (independent of world size)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class TrainBatchSampler:
    """Infinite, resumable, distributed stream of per-process batches of ``(index, augmentation seed)``.

    Each epoch is a permutation of the dataset drawn from ``(seed, epoch)``; it is cut into micro-batches of
    ``images_per_batch`` images (with ``groups``, images of one aspect group per micro-batch, the leftovers of
    all groups then form mixed micro-batches; an incomplete last micro-batch is dropped), so every epoch has the
    same number of micro-batches. Micro-batch ``m`` of the global stream goes to optimizer step
    ``m // (accumulation_steps * world_size)``, accumulation step ``(m // world_size) % accumulation_steps`` and
    rank ``m % world_size``: the same images make up each optimizer step whatever the number of processes. This
    is the job of ``torch.utils.data.DistributedSampler`` (disjoint shards of one seeded permutation per epoch),
    made resumable at any iteration: the stream starts at ``start_iter``.
    """

    def __init__(self, num_images: int, *, images_per_batch: int, seed: int, world_size: int = 1, rank: int = 0,
                 accumulation_steps: int = 1, start_iter: int = 0, groups: Sequence[int] | None = None) -> None:
        if num_images < images_per_batch:
            raise DataError(f"training set has {num_images} images, fewer than solver.images_per_process="
                            f"{images_per_batch}")
        self.num_images = num_images
        self.images_per_batch = images_per_batch
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.accumulation_steps = accumulation_steps
        self.start_iter = start_iter
        self.groups = list(groups) if groups is not None else None
        self._cache: tuple[int, np.ndarray, list[list[int]]] | None = None
        self.batches_per_epoch = len(self.epoch(0)[1])
        if self.batches_per_epoch == 0:
            raise DataError(f"training set: no complete batch of {images_per_batch} images per epoch")

    def epoch(self, epoch: int) -> tuple[np.ndarray, list[list[int]]]:
        """``epoch``'s permutation [num_images] and its micro-batches (lists of positions in the permutation)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1], self._cache[2]
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
        size = self.images_per_batch
        batches: list[list[int]] = []
        if self.groups is None:
            positions = list(range(self.num_images))
        else:
            buffers: dict[int, list[int]] = {}
            for pos, index in enumerate(perm):
                buf = buffers.setdefault(self.groups[index], [])
                buf.append(pos)
                if len(buf) == size:
                    batches.append(buf.copy())
                    buf.clear()
            positions = sorted(p for buf in buffers.values() for p in buf)
        batches += [positions[i:i + size] for i in range(0, len(positions) - size + 1, size)]
        self._cache = (epoch, perm, [[int(p) for p in b] for b in batches])
        return perm, self._cache[2]

    def micro_batch(self, m: int) -> list[tuple[int, int]]:
        """Global micro-batch ``m`` as ``[(dataset index, augmentation seed)]``."""
        epoch, k = divmod(m, self.batches_per_epoch)
        perm, batches = self.epoch(epoch)
        positions = batches[k]
        return [(int(perm[p]), sample_seed(self.seed, epoch, p)) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_iter = self.accumulation_steps * self.world_size
        m = self.start_iter * per_iter + self.rank
        while True:
            yield self.micro_batch(m)
            m += self.world_size
