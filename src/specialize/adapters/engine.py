"""A generation engine that answers many requests for different adapters (and the base) in the
same forward passes: continuous batching over one loaded base model.

A scheduler thread owns the model. Between decoding steps it admits queued requests (their
prompts are prefilled together, left-padded, and their KV cache is joined to the running one),
drops rows that finished or whose client went away, and trims cache columns no row needs. The
joined cache keeps room past its rows (`models/kv_cache.py`), so decoding steps write their keys
and values in place, and leaving rows are compacted in place. Each
row names its adapter; `batched_lora.BatchedLora` applies every row's own LoRA weights in one
forward (every loaded adapter's A and B stacked per layer, grouped by adapter). The rows of an
adapter it cannot take (DoRA and other variants, LoRA on embeddings, `modules_to_save`) get a
forward of their own on PEFT's single-adapter path, on their rows of the cache (PEFT's mixed
batches refuse DoRA). Each row has its own sampling settings (temperature, top_p, and a seeded `torch.Generator`) and stop conditions (max tokens, EOS, stop
strings), and streams its own text as soon as it is safe to show (never half a stop string or
half a UTF-8 character).

A new row reuses the KV of a prompt prefix computed before for the same adapter
(`prefix_cache.PrefixCache`), and decoding steps run the linear layers through `decode_linear`'s
small-batch kernel, whose rows do not depend on each other. Greedy answers are the same as the
request served alone; `tests/unit/adapters/test_engine.py` compares them, row by row, on mixed
batches of prompts of different lengths.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from specialize.adapters import decode_linear
from specialize.adapters.prefix_cache import PrefixCache
from specialize.errors import ModelError, SpecializeError
from specialize.models.generation import GenerationSettings

log = logging.getLogger("specialize.engine")
BASE = "base"
# Positions of KV cache kept free past a batch's longest row: decoding steps write into them in
# place (transformers' DynamicCache copied the whole cache with torch.cat at every step: a step at
# 8 rows of 1,540 tokens took 1.25-1.65x as long); when they run out the cache grows by as many again.
CACHE_ROOM = 128


class QueueFull(SpecializeError):
    """Every slot of the engine is taken; the caller should retry after `retry_after` seconds."""

    def __init__(self, waiting: int, limit: int, retry_after: int):
        super().__init__(
            f"server busy: {waiting} requests in flight (limit {limit})",
            fix=f"retry after {retry_after} s",
        )
        self.retry_after = retry_after


@dataclass
class Event:
    kind: str  # "text" (a piece of the reply), "done" (finish_reason in text) or "error"
    text: str = ""
    error: BaseException | None = None


@dataclass(eq=False)  # two identical requests are still two jobs
class Job:
    """One request: its adapter, prompt, settings, and where its events go."""

    adapter: str
    prompt_ids: list[int]
    settings: GenerationSettings
    stop: tuple[str, ...] = ()
    notify: Callable[[Event], None] | None = None  # called from the scheduler thread
    # filled in by the engine
    generated: list[int] = field(default_factory=list)
    text: str = ""
    shown: int = 0  # characters of `text` already sent
    finish_reason: str | None = None
    cancelled: bool = False
    generator: object = None
    error: BaseException | None = None
    left: threading.Event = field(default_factory=threading.Event)  # set when it leaves the engine

    def cancel(self) -> None:
        """Stop generating for this request (its client went away); safe from any thread."""
        self.cancelled = True


class Engine:
    """Owns a ModelHost's model from a scheduler thread and batches every request through it."""

    def __init__(
        self,
        host,
        *,
        max_batch: int = 32,
        max_in_flight: int = 64,
        lora_mode: str = "group",
        decode_kernel: bool = True,
    ):
        self.host = host
        # decoding steps through decode_linear's small-batch kernel (where it is available);
        # built now (once per machine, seconds) rather than during the first request
        self.decode_kernel = decode_kernel
        if decode_kernel and decode_linear.kernel() is None:
            log.info("decoding uses torch's linear layers: %s", decode_linear.why_not())
        self.lora_mode = lora_mode  # "group" or "gather": see adapters/batched_lora.py
        self._lora = None  # (host revision, BatchedLora) of the adapters loaded now
        self._revision = None  # the host's adapter revision that the two below were made for
        self._prefixes = PrefixCache()  # KV of prompt prefixes computed before, per adapter
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.context = _context_length(host.model)
        self._eos = _eos_ids(host.model, host.tokenizer)
        self._pad = host.tokenizer.pad_token_id
        if self._pad is None:
            self._pad = next(iter(self._eos), 0)
        self._pending: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._live = 0  # jobs submitted and not yet finished, failed or dropped
        self._batch = None  # (cache, attention mask, last token per row) of the active rows
        self._wake = threading.Condition()
        self._stopping = False
        self._step_seconds = 0.05  # moving average, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="specialize-engine", daemon=True)
        self._thread.start()

    # --- the public side (any thread) ------------------------------------------------------

    @property
    def in_flight(self) -> int:
        with self._wake:
            return self._live

    def submit(self, job: Job) -> Job:
        """Queue a job, or raise QueueFull (with a Retry-After estimate) when every slot is taken."""
        if job.adapter != BASE and job.adapter not in self.host.adapters:
            raise ModelError(f"model {job.adapter!r} is not served")
        total = len(job.prompt_ids) + job.settings.max_new_tokens
        if total > self.context:
            raise ModelError(
                f"the prompt has {len(job.prompt_ids)} tokens and max_tokens is "
                f"{job.settings.max_new_tokens}: {total} in all, over the model's context of "
                f"{self.context} tokens",
                fix="shorten the prompt or lower max_tokens",
            )
        with self._wake:
            if self._stopping:
                raise ModelError("the server is shutting down")
            if self._live >= self.max_in_flight:
                raise QueueFull(self._live, self.max_in_flight, self._retry_after())
            self._pending.append(job)
            self._live += 1
            self._wake.notify()
        return job

    def stream(self, job: Job) -> Iterator[str]:
        """Submit a job and yield its text pieces here (a blocking, single-caller convenience)."""
        import queue

        events: queue.Queue[Event] = queue.Queue()
        job.notify = events.put
        self.submit(job)
        try:
            while True:
                event = events.get()
                if event.kind == "text":
                    yield event.text
                elif event.kind == "error":
                    raise event.error
                else:
                    return
        finally:
            job.cancel()

    def run(self, job: Job) -> Job:
        """Submit a job and wait for its whole reply (job.text, job.finish_reason)."""
        for _ in self.stream(job):
            pass
        return job

    def wait(self, job: Job, timeout: float | None = None) -> Job:
        """Wait for a submitted job to leave the engine; raise its error if it failed."""
        if not job.left.wait(timeout):
            raise TimeoutError(f"generation for {job.adapter!r} still running after {timeout} s")
        if job.error is not None:
            raise job.error
        return job

    def stop(self) -> None:
        """Fail every queued and running job and end the scheduler thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(10)

    def _retry_after(self) -> int:
        # a slot frees up when the running row nearest to its token limit ends
        left = min((j.settings.max_new_tokens - len(j.generated) for j in self._active), default=1)
        return max(1, round(left * self._step_seconds))

    # --- the scheduler thread --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._pending and not self._active:
                    self._wake.wait()
                if self._stopping:
                    doomed = list(self._pending) + self._active
                    self._pending.clear()
                    self._active, self._batch = [], None
                    break
                room = self.max_batch - len(self._active)
                new = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
            self._retire([job for job in new if job.cancelled])
            new = [job for job in new if not job.cancelled]
            try:
                with self.host._lock:  # loading or unloading an adapter waits between steps
                    self._step(new)
            except Exception as exc:  # a bug or a bad adapter: fail these rows, keep serving
                log.exception("generation step failed")
                failed = list(dict.fromkeys(self._active + new))
                self._active, self._batch = [], None
                for job in failed:
                    _emit(job, Event("error", error=exc))
                self._retire(failed)
        for job in doomed:
            _emit(job, Event("error", error=ModelError("the server is shutting down")))
        self._retire(doomed)

    def _retire(self, jobs: list[Job]) -> None:
        with self._wake:
            self._live -= len(jobs)
        for job in jobs:
            job.left.set()

    def _step(self, new: list[Job]) -> None:
        """One decoding step for the running rows, then the new rows' prefill (so a stream of
        arrivals never holds the running rows back)."""
        started = time.monotonic()
        if self._revision != self.host.revision:  # adapters were loaded or unloaded
            decode_linear.install(self.host.model)  # an adapter wraps linear layers anew
            self._prefixes.clear()  # a name may come back with other weights
            self._revision = self.host.revision
        names = self._names()
        for job in self._active:
            if job.adapter not in names and not job.cancelled:
                _emit(job, Event("error", error=ModelError(f"model {job.adapter!r} was unloaded")))
        self._drop([j for j in self._active if j.cancelled or j.adapter not in names])
        new = self._refuse_unloaded(new)
        if self._active:
            self._advance(self._active, self._decode())
            self._drop([j for j in self._active if j.finish_reason or j.cancelled])
        if new:
            logits, batch = self._prefill(new)
            self._active += new
            self._batch = _join(self._batch, batch)
            self._group_rows()
            self._advance(new, logits)
            self._drop([j for j in new if j.finish_reason or j.cancelled])
        elapsed = time.monotonic() - started
        self._step_seconds = 0.9 * self._step_seconds + 0.1 * elapsed

    def _names(self) -> set[str]:
        return {BASE, *self.host.adapters}

    def _refuse_unloaded(self, new: list[Job]) -> list[Job]:
        names = self._names()
        for job in new:
            if job.adapter not in names:
                _emit(job, Event("error", error=ModelError(f"model {job.adapter!r} was unloaded")))
        self._retire([job for job in new if job.adapter not in names])
        return [job for job in new if job.adapter in names]

    def _groups(self, adapters: list[str]) -> list[tuple[list[int], Callable]]:
        """The rows of one forward, split into the groups that can share a forward: (rows, a
        function giving the context that applies their adapters and yields the forward's extra
        keyword arguments). Normally one group: the base and every adapter on the stacked path.
        An adapter the stacked path cannot take (DoRA, ...) gets its own group on PEFT's single
        adapter path (PEFT's mixed batches refuse DoRA too)."""
        from peft import PeftModel

        from specialize.adapters.batched_lora import BatchedLora

        model = self.host.model
        every = list(range(len(adapters)))
        if not isinstance(model, PeftModel):
            return [(every, lambda: contextlib.nullcontext({}))]
        if self._lora is None or self._lora[0] != self.host.revision:
            names = list(self.host.adapters)
            self._lora = (self.host.revision, BatchedLora(model, names, self.lora_mode))
        lora = self._lora[1]
        stacked = [row for row in every if adapters[row] not in lora.unsupported]
        groups = []
        if stacked:
            names = [adapters[row] for row in stacked]
            groups.append((stacked, lambda: lora.rows(names)))
        for name in dict.fromkeys(adapters[row] for row in every if row not in stacked):
            rows = [row for row in every if adapters[row] == name]
            groups.append((rows, lambda name=name: _single(model, name)))
        return groups

    def _group_rows(self) -> None:
        """Put the rows of each forward group (see `_groups`) next to each other: one copy of the
        cache as rows join, so that every decoding step after it writes in place. Leaving rows
        keep the others' order, so the groups stay together until rows join again."""
        import torch

        groups = [rows for rows, _ in self._groups([j.adapter for j in self._active])]
        if all(_block(rows) for rows in groups):
            return
        order = [row for rows in groups for row in rows]
        index = torch.tensor(order)
        cache, mask = self._batch
        for layer in cache.layers:
            layer.batch_select_indices(index)  # a reorder: gathered into a new buffer
        self._active = [self._active[row] for row in order]
        self._batch = (cache, mask[index])

    def _forward(self, jobs: list[Job], ids, mask, positions, cache):
        """One forward of these rows; returns each row's last logits and the updated cache."""
        import torch

        from specialize.models.kv_cache import fill_to, joined_cache, row_windows

        groups = self._groups([j.adapter for j in jobs])
        if len(groups) == 1:
            return self._forward_rows(groups[0][1], ids, mask, positions, cache)
        blocks = [_block(rows) for rows, _ in groups]
        windows = None if None in blocks else row_windows(cache, blocks, ids.shape[1])
        if windows is not None:  # a decoding step: each group writes its own rows in place
            logits = []
            for (_, context), block, window in zip(groups, blocks, windows, strict=True):
                rows = slice(block.start, block.stop)
                logits.append(
                    self._forward_rows(context, ids[rows], mask[rows], positions[rows], window)[0]
                )
            fill_to(cache, windows[0].layers[0].length)
            back = torch.argsort(torch.tensor([row for block in blocks for row in block]))
            return torch.cat(logits)[back], cache
        parts, order = [], []  # a prefill, or rows not yet grouped: each group on a copy
        for rows, rows_context in groups:  # each group on its own rows of the cache
            index = torch.tensor(rows)
            part = _select_rows(cache, index)
            parts.append(
                self._forward_rows(rows_context, ids[index], mask[index], positions[index], part)
            )
            order += rows
        back = torch.argsort(torch.tensor(order))  # from group order back to row order
        logits = torch.cat([part[0] for part in parts])[back]
        merged = parts[0][1]
        for layer, *others in zip(merged.layers, *(p[1].layers for p in parts[1:]), strict=True):
            layer.keys = torch.cat([layer.keys, *(o.keys for o in others)])[back]
            layer.values = torch.cat([layer.values, *(o.values for o in others)])[back]
        return logits, joined_cache([merged], mask.shape[1], CACHE_ROOM)

    def _forward_rows(self, rows_context, ids, mask, positions, cache):
        import torch

        model = self.host.model
        with (
            torch.inference_mode(),
            decode_linear.decoding(self.decode_kernel),
            rows_context() as extra,
        ):
            out = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=positions.to(model.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
        return out.logits[:, -1, :].float(), out.past_key_values

    def _prefill(self, jobs: list[Job]):
        """Run the new rows' prompts, left-padded to one length; return last logits and batch.

        A row whose prompt starts with a prefix computed before gets that prefix's KV in the cache
        (left-padded to the longest reused prefix) and computes only the rest; its mask then has
        the padding of its rest between the two parts, which attention skips like any padding."""
        import torch

        found = [self._prefixes.lookup(job.adapter, job.prompt_ids) for job in jobs]
        reused = max(length for length, _ in found)
        rests = [job.prompt_ids[length:] for job, (length, _) in zip(jobs, found, strict=True)]
        width = max(map(len, rests))
        ids = torch.full((len(jobs), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), reused + width), dtype=torch.long)
        positions = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, (job, rest, (length, _)) in enumerate(zip(jobs, rests, found, strict=True)):
            ids[row, width - len(rest) :] = torch.tensor(rest)
            mask[row, reused - length : reused] = 1
            mask[row, reused + width - len(rest) :] = 1
            positions[row, width - len(rest) :] = torch.arange(length, length + len(rest))
            job.generator = _generator(job.settings.seed)
        cache = _cache_with_prefixes(found, reused)
        logits, cache = self._forward(jobs, ids, mask, positions, cache)
        for row, job in enumerate(jobs):  # keep the new prompts' prefixes for later requests
            if found[row][0] < self._prefixes.reusable(len(job.prompt_ids)):
                columns = mask[row].nonzero().squeeze(1)
                layers = [
                    (layer.keys[row][:, columns], layer.values[row][:, columns])
                    for layer in cache.layers
                ]
                self._prefixes.store(job.adapter, job.prompt_ids, layers)
        return logits, (cache, mask)

    def _decode(self):
        import torch

        cache, mask = self._batch
        last = torch.tensor([[j.generated[-1]] for j in self._active])
        positions = mask.sum(-1, keepdim=True)  # the next position of each row
        mask = torch.cat([mask, torch.ones((len(self._active), 1), dtype=mask.dtype)], dim=1)
        logits, cache = self._forward(self._active, last, mask, positions, cache)
        self._batch = (cache, mask)
        return logits

    def _advance(self, jobs: list[Job], logits) -> None:
        """Pick each row's next token, update its text, and tell its client what is new."""
        tokenizer = self.host.tokenizer
        greedy = logits.argmax(-1).tolist()  # one device sync for every greedy row
        for row, job in enumerate(jobs):
            if job.cancelled:
                continue
            token = (
                greedy[row]
                if job.settings.temperature <= 0
                else _sample(logits[row].cpu(), job.settings, job.generator)
            )
            job.generated.append(token)
            if token in self._eos:
                job.finish_reason = "stop"
                text = tokenizer.decode(job.generated[:-1], skip_special_tokens=True)
            else:
                text = tokenizer.decode(job.generated, skip_special_tokens=True)
            cut = _first_stop(text, job.stop)
            if cut is not None:
                text, job.finish_reason = text[:cut], "stop"
            elif not job.finish_reason and (
                len(job.generated) >= job.settings.max_new_tokens
                or len(job.prompt_ids) + len(job.generated) >= self.context
            ):
                job.finish_reason = "length"
            job.text = text
            safe = len(text) if job.finish_reason else _safe_length(text, job.stop)
            if safe > job.shown:
                _emit(job, Event("text", text[job.shown : safe]))
                job.shown = safe
            if job.finish_reason:
                _emit(job, Event("done", job.finish_reason))

    def _drop(self, leaving: list[Job]) -> None:
        """Remove rows from the batch and its cache; trim columns that only padding still uses."""
        if not leaving:
            return
        import torch

        self._retire(leaving)

        keep = [row for row, job in enumerate(self._active) if job not in leaving]
        self._active = [self._active[row] for row in keep]
        if not keep:
            self._batch = None
            return
        from specialize.models.kv_cache import keep_rows

        cache, mask = self._batch
        mask = mask[torch.tensor(keep)]
        first = int(mask.any(0).nonzero()[0])  # leading columns no remaining row attends to
        self._batch = (keep_rows(cache, keep, first, CACHE_ROOM), mask[:, first:])


def _block(rows: list[int]) -> range | None:
    """The rows as one range when they are consecutive and ascending, else None."""
    block = range(rows[0], rows[-1] + 1)
    return block if list(block) == rows else None


@contextlib.contextmanager
def _single(model, name: str):
    """PEFT's ordinary path with one adapter active for every row of the forward."""
    model.set_adapter(name)
    yield {}


def _cache_with_prefixes(found: list, width: int):
    """A cache holding the first `length` tokens of each row's stored prefix, for (length,
    prefix) per row (0, None: none), left-padded to `width` columns."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if not width:
        return cache
    shapes = next(prefix.layers for _, prefix in found if prefix is not None)
    for number, (keys, values) in enumerate(shapes):
        heads, _, dim = keys.shape
        stacked_keys = keys.new_zeros((len(found), heads, width, dim))
        stacked_values = values.new_zeros((len(found), heads, width, values.shape[-1]))
        for row, (length, prefix) in enumerate(found):
            if length:
                stacked_keys[row, :, width - length :] = prefix.layers[number][0][:, :length]
                stacked_values[row, :, width - length :] = prefix.layers[number][1][:, :length]
        cache.update(stacked_keys, stacked_values, number)
    return cache


def _select_rows(cache, index):
    """A new cache with only these rows (empty when the cache is: a prefill)."""
    from transformers import DynamicCache

    part = DynamicCache()
    for number, layer in enumerate(getattr(cache, "layers", [])):
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            part.update(layer.keys[index], layer.values[index], number)
    return part


def _join(running, new):
    """One batch from the running one (None: none) and the new rows: the shorter is padded on the
    left so every row ends at the same column, in a cache with room for the next steps."""
    import torch

    from specialize.models.kv_cache import joined_cache

    batches = [b for b in (running, new) if b is not None]
    width = max(mask.shape[1] for _, mask in batches)
    masks = [torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for _, mask in batches]
    cache = joined_cache([cache for cache, _ in batches], width, CACHE_ROOM)
    return cache, torch.cat(masks)


def _sample(logits, settings: GenerationSettings, generator) -> int:
    """One token drawn with the row's own (CPU) generator, after temperature and top_p."""
    import torch

    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the tokens ranked above each one
        ordered[before >= settings.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


def _generator(seed: int | None):
    import torch

    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [index for s in stops if (index := text.find(s)) >= 0]
    return min(found) if found else None


def _safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of the text can be shown: not a trailing partial character, nor the start of a
    stop string that the next tokens may complete."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[end - size : end] == stop[:size]:
                held = max(held, size)
                break
    return end - held


def _emit(job: Job, event: Event) -> None:
    if event.kind == "error":
        job.error = event.error
    if job.notify is None or (job.cancelled and event.kind == "text"):
        return
    job.notify(event)


def _context_length(model) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return {i for i in ids if i is not None}
