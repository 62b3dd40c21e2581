"""Recovery after :func:`sepconv.nn.convert`: a short knowledge-distillation fine-tune.

A converted model starts from the optimal weights of its new structure, but the errors of
the layers add up. :func:`recover` trains it (the *student*) for a few steps to reproduce the
original model (the *teacher*): its outputs (softened class probabilities, Hinton et al.
2015, or the raw outputs), optionally its intermediate features at named layers, and the
labels when the data has them. It returns the loss and accuracy trajectory.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_bool, check_nonnegative_int, check_positive_float

__all__ = ["RecoverReport", "recover"]

LOSSES = ("auto", "kd", "mse")
SCHEDULES = ("cosine", "constant")


@dataclass
class RecoverReport:
    """The trajectory of :func:`recover`.

    Attributes
    ----------
    steps : int
        Optimizer steps taken.
    epochs : float or None
        Passes over the data (steps / batches per epoch, when that is known).
    history : list of dict
        Every ``log_every`` steps (and the last): ``step``, ``epoch``, ``lr`` and the mean
        since the previous entry of ``loss`` (the total) and of its parts ``output`` (the
        distillation loss on the outputs), ``labels`` (cross-entropy, with labels) and
        ``features``.
    evaluations : list of dict
        Before training (step 0), every ``eval_every`` steps and at the end: ``step``,
        ``epoch``, ``accuracy`` (with labels), ``agreement`` (fraction of samples where the
        student's top class is the teacher's) and ``output_error``
        (``||f_s(x) - f_t(x)|| / ||f_t(x)||`` over the evaluation data).
    teacher_accuracy : float or None
        The teacher's accuracy on the evaluation data (with labels).
    seconds : float
    settings : dict
        The arguments that shaped the run.
    """

    steps: int
    epochs: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    teacher_accuracy: float | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_before(self) -> float | None:
        return self.evaluations[0].get("accuracy") if self.evaluations else None

    @property
    def accuracy_after(self) -> float | None:
        return self.evaluations[-1].get("accuracy") if self.evaluations else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``schema`` 1): the scalars, then copies of the containers."""
        d: dict[str, Any] = {"schema": 1}
        scalars = "steps epochs teacher_accuracy accuracy_before accuracy_after seconds"
        d.update((name, getattr(self, name)) for name in scalars.split())
        d["settings"] = dict(self.settings)
        d["history"] = [dict(h) for h in self.history]
        d["evaluations"] = [dict(e) for e in self.evaluations]
        return d

    def __str__(self) -> str:
        epochs = "" if self.epochs is None else f" ({self.epochs:.3g} epochs)"
        lines = [f"recover: {self.steps} steps{epochs} in {self.seconds:.2f} s"]
        if self.teacher_accuracy is not None:
            lines.append(f"teacher accuracy {self.teacher_accuracy:.4f}")
        for e in self.evaluations:
            parts = [f"step {e['step']:>6}"]
            if e.get("accuracy") is not None:
                parts.append(f"accuracy {e['accuracy']:.4f}")
            if e.get("agreement") is not None:
                parts.append(f"agreement {e['agreement']:.4f}")
            parts.append(f"output error {e['output_error']:.4g}")
            lines.append(", ".join(parts))
        if self.history:
            h = self.history[-1]
            lines.append(f"last training loss {h['loss']:.4g} (step {h['step']})")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


@dataclass
class _Data:
    """Batches of ``(x, y or None)``, forever (epochs reshuffled); ``size`` when known."""

    batches: Iterator[tuple[Tensor, Tensor | None]]
    size: int | None
    per_epoch: int | None


def _pair(data: Any, name: str) -> tuple[Tensor, Tensor | None] | None:
    """``(x, y)`` from a tensor or a pair of tensors; None for other iterables."""
    if isinstance(data, Tensor):
        return data, None
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{name} must be inputs and labels of the same length, got {x.shape[0]} inputs "
                f"and {y.shape[0]} labels"
            )
        return x, y
    return None


def _labels(y: Any) -> Tensor | None:
    if isinstance(y, Tensor) and not y.is_floating_point() and not y.is_complex():
        return y
    return None


def _batches(data: Any, batch_size: int, seed: int) -> _Data:
    pair = _pair(data, "data")
    if pair is not None:
        x, y = pair
        n = x.shape[0]
        if n < 1:
            raise ValueError("data must hold at least one sample, got an empty tensor")
        gen = torch.Generator().manual_seed(seed)

        def tensors() -> Iterator[tuple[Tensor, Tensor | None]]:
            while True:
                perm = torch.randperm(n, generator=gen)
                for b in range(0, n, batch_size):
                    idx = perm[b : b + batch_size]
                    yield x[idx], (None if y is None else y[idx])

        return _Data(tensors(), n, math.ceil(n / batch_size))
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            "data must be a tensor of inputs, a pair (inputs, labels) of tensors, or an "
            f"iterable of batches (a DataLoader), got {type(data).__name__}"
        )
    try:
        per_epoch: int | None = len(data)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None

    def loader() -> Iterator[tuple[Tensor, Tensor | None]]:
        while True:
            empty = True
            for item in data:
                empty = False
                if isinstance(item, Tensor):
                    yield item, None
                elif isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
                    yield item[0], (_labels(item[1]) if len(item) > 1 else None)
                else:
                    raise TypeError(
                        "data batches must be tensors or (inputs, labels, ...) tuples, got "
                        f"{type(item).__name__}"
                    )
            if empty:
                raise ValueError("data yielded no batches")

    return _Data(loader(), None, per_epoch)


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------


def _is_logits(out: Any) -> bool:
    return isinstance(out, Tensor) and out.ndim == 2 and out.shape[1] > 1


def _output_loss(s: Tensor, t: Tensor, kind: str, temperature: float) -> Tensor:
    if kind == "kd":
        T = temperature
        return F.kl_div(
            F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True,
            reduction="batchmean",
        ) * (T * T)  # fmt: skip
    return _normalized_mse(s, t)


def _normalized_mse(s: Tensor, t: Tensor) -> Tensor:
    """``mean((s - t)^2) / mean(t^2)``: scale-free, 1 for a student that outputs zeros."""
    return F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-12)


class _Features:
    """Outputs of named submodules, captured by forward hooks while installed."""

    def __init__(self, model: nn.Module, names: Sequence[str], which: str) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(
                f"features names {missing} that are not modules of the {which} (names as in "
                "model.named_modules(), present in both models)"
            )
        self.modules = [(n, modules[n]) for n in names]
        self.out: dict[str, Tensor] = {}

    def install(self, stack: ExitStack) -> None:
        for name, m in self.modules:

            def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                if isinstance(out, Tensor):
                    self.out[name] = out

            stack.callback(m.register_forward_hook(hook).remove)


# ----------------------------------------------------------------------------------------------
# recover
# ----------------------------------------------------------------------------------------------


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _progress(enabled: bool | None, total: int) -> Any:
    """A rich progress bar on stderr (None when disabled or stderr is not a terminal)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("recover"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    bar.start()
    bar.add_task("recover", total=total, info="")
    return bar


def _evaluate(
    student: nn.Module,
    teacher: nn.Module,
    x: Tensor,
    y: Tensor | None,
    batch: int,
) -> tuple[dict[str, Any], float | None]:
    """Accuracy, agreement with the teacher and relative output error on ``(x, y)``."""
    s_dev, t_dev = _device(student), _device(teacher)
    outs_s, outs_t = [], []
    modes = {m: m.training for m in itertools.chain(student.modules(), teacher.modules())}
    student.eval()
    teacher.eval()
    try:
        with torch.no_grad():
            for b in range(0, x.shape[0], batch):
                xb = x[b : b + batch]
                outs_s.append(student(xb.to(s_dev)).detach().double().cpu())
                outs_t.append(teacher(xb.to(t_dev)).detach().double().cpu())
    finally:
        for m, mode in modes.items():
            m.training = mode
    s, t = torch.cat(outs_s), torch.cat(outs_t)
    den = float(t.norm())
    out: dict[str, Any] = {
        "output_error": float((s - t).norm()) / den if den > 0 else float((s - t).norm())
    }
    teacher_acc = None
    if _is_logits(s):
        out["agreement"] = float((s.argmax(1) == t.argmax(1)).double().mean())
        if y is not None:
            yy = y.cpu()
            out["accuracy"] = float((s.argmax(1) == yy).double().mean())
            teacher_acc = float((t.argmax(1) == yy).double().mean())
    return out, teacher_acc


def recover(
    student: nn.Module,
    teacher: nn.Module,
    data: Any,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    loss: str = "auto",
    temperature: float = 4.0,
    alpha: float = 0.5,
    features: Sequence[str] | None = None,
    feature_weight: float = 1.0,
    eval_data: Any = None,
    eval_every: int | None = None,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    train_bn: bool = True,
    log_every: int = 10,
    seed: int = 0,
    progress: bool | None = None,
) -> RecoverReport:
    """Fine-tune a converted model to reproduce the original (knowledge distillation).

    The step after :func:`sepconv.nn.convert`: ``student`` (the converted model) is trained
    with Adam to match ``teacher`` (the original, frozen) on ``data``.

    Parameters
    ----------
    student : nn.Module
        The model to train (in place); left in evaluation mode.
    teacher : nn.Module
        The reference; run in evaluation mode without gradients, never changed.
    data : Tensor, (Tensor, Tensor) or iterable of batches
        Training inputs; a pair ``(inputs, labels)`` adds the labels' cross-entropy (integer
        class labels); an iterable (a ``DataLoader``) yields input tensors or
        ``(inputs, labels, ...)`` tuples and is cycled. Tensors are batched by
        ``batch_size`` in a seeded random order, reshuffled each epoch.
    steps : int, optional
        Optimizer steps. Give ``steps`` or ``epochs``, not both; default one epoch.
    epochs : float, optional
        Passes over ``data`` (needs its size: tensors, or an iterable with ``len``).
    lr : float
        Adam's learning rate (the peak, with the cosine schedule).
    batch_size : int
        For tensor data.
    loss : {'auto', 'kd', 'mse'}
        Output loss. ``'kd'``: Hinton's distillation loss
        ``T^2 KL(softmax(t / T) || softmax(s / T))`` on class scores (outputs of shape
        ``(N, classes)``); ``'mse'``: ``mean((s - t)^2) / mean(t^2)``; ``'auto'``: ``'kd'``
        for outputs of shape ``(N, C > 1)``, else ``'mse'``.
    temperature : float
        ``T`` of the distillation loss.
    alpha : float in [0, 1]
        With labels (and ``'kd'``): ``alpha * distillation + (1 - alpha) * cross-entropy``.
    features : sequence of str, optional
        Names of submodules present in both models (``[r.name for r in report.converted]``:
        the converted layers) whose outputs are matched too, each by the normalized MSE,
        averaged and weighted by ``feature_weight``.
    eval_data : Tensor or (Tensor, Tensor), optional
        Evaluated before training, every ``eval_every`` steps (default: every epoch when the
        epoch length is known) and at the end: accuracy (with labels), top-1 agreement with the
        teacher, relative output error.
    weight_decay : float
        Adam's (L2) weight decay.
    schedule : {'cosine', 'constant'}
        Learning rate: cosine decay from ``lr`` to 0 over the steps, or constant.
    train_bn : bool
        Batch norm layers of the student in training mode (statistics updated) while
        training; False keeps them in evaluation mode (small batches).
    log_every : int
        Steps per entry of ``history``.
    seed : int
        Seeds the order of the data.
    progress : bool, optional
        A progress bar on stderr (default: when stderr is a terminal).

    Returns
    -------
    RecoverReport
        ``history`` (losses), ``evaluations`` (accuracy, agreement, output error),
        ``accuracy_before``, ``accuracy_after``, ``teacher_accuracy``; ``str()`` summarises.

    Raises
    ------
    TypeError
        ``student``/``teacher`` not modules; ``data`` not tensors or an iterable of batches.
    ValueError
        Both ``steps`` and ``epochs``; ``epochs`` with data of unknown size; a bad ``loss``,
        ``schedule``, ``alpha`` or ``features`` name; a loss that becomes NaN or infinite.

    Labels are used with the ``'kd'`` loss only (``'mse'`` matches the teacher alone).

    Examples
    --------
    >>> import torch
    >>> from sepconv.nn import convert, recover
    >>> from sepconv.nn.models import small_cnn
    >>> teacher = small_cnn(width=8, depth=2, num_classes=4).eval()
    >>> student, _ = convert(teacher, rank=1, input_shape=(1, 3, 16, 16))
    >>> x = torch.randn(64, 3, 16, 16)
    >>> report = recover(student, teacher, x, steps=8, batch_size=16, eval_data=x[:32],
    ...                  progress=False)
    >>> [e["step"] for e in report.evaluations]
    [0, 4, 8]
    """
    t0 = time.perf_counter()
    for name, m in (("student", student), ("teacher", teacher)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    if student is teacher:
        raise ValueError("student and teacher must be different modules (convert makes a copy)")
    batch_size = check_nonnegative_int(batch_size, "batch_size", minimum=1)
    log_every = check_nonnegative_int(log_every, "log_every", minimum=1)
    lr = check_positive_float(lr, "lr")
    temperature = check_positive_float(temperature, "temperature")
    weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
    feature_weight = check_positive_float(feature_weight, "feature_weight", allow_zero=True)
    alpha = check_positive_float(alpha, "alpha", allow_zero=True)
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    train_bn = check_bool(train_bn, "train_bn")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if steps is not None and epochs is not None:
        raise ValueError(f"give steps or epochs, not both (got steps={steps}, epochs={epochs})")
    stream = _batches(data, batch_size, seed)
    if steps is not None:
        steps = check_nonnegative_int(steps, "steps", minimum=1)
    else:
        if stream.per_epoch is None:
            raise ValueError(
                "epochs needs data of known length (tensors or an iterable with len()); give "
                "steps instead"
            )
        n_epochs = 1.0 if epochs is None else check_positive_float(epochs, "epochs")
        steps = max(1, round(n_epochs * stream.per_epoch))
    if eval_every is None:
        eval_every = stream.per_epoch or steps
    eval_every = check_nonnegative_int(eval_every, "eval_every", minimum=1)
    names = [] if features is None else list(features)
    if isinstance(features, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"features must be a sequence of module names, got {features!r}")
    f_student = _Features(student, names, "student")
    f_teacher = _Features(teacher, names, "teacher")
    evaluation = None
    if eval_data is not None:
        evaluation = _pair(eval_data, "eval_data")
        if evaluation is None:
            raise TypeError(
                "eval_data must be a tensor of inputs or a pair (inputs, labels) of tensors, "
                f"got {type(eval_data).__name__}"
            )
        evaluation = (evaluation[0], _labels(evaluation[1]))

    report = RecoverReport(
        steps=steps,
        epochs=None if stream.per_epoch is None else steps / stream.per_epoch,
        settings={
            "lr": lr, "batch_size": batch_size, "loss": loss, "temperature": temperature,
            "alpha": alpha, "features": names, "feature_weight": feature_weight,
            "weight_decay": weight_decay, "schedule": schedule, "train_bn": train_bn,
            "seed": seed,
        },
    )  # fmt: skip

    def epoch_at(step: int) -> float | None:
        return None if stream.per_epoch is None else step / stream.per_epoch

    def evaluate(step: int) -> None:
        if evaluation is None:
            return
        result, teacher_acc = _evaluate(student, teacher, *evaluation, max(batch_size, 256))
        report.evaluations.append({"step": step, "epoch": epoch_at(step), **result})
        if teacher_acc is not None:
            report.teacher_accuracy = teacher_acc

    s_dev, t_dev = _device(student), _device(teacher)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("student has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps))
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    teacher_modes = {m: m.training for m in teacher.modules()}
    evaluate(0)
    bar = _progress(progress, steps)
    sums: dict[str, float] = {}
    count = 0
    try:
        teacher.eval()
        student.train()
        if not train_bn:
            for m in student.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for step in range(1, steps + 1):
            x, y = next(stream.batches)
            with ExitStack() as stack:
                f_teacher.install(stack)
                with torch.no_grad():
                    t_out = teacher(x.to(t_dev))
            with ExitStack() as stack:
                f_student.install(stack)
                s_out = student(x.to(s_dev))
            kind = loss
            if kind == "auto":
                kind = "kd" if _is_logits(s_out) else "mse"
            t_out = t_out.detach().to(s_dev)
            parts = {"output": _output_loss(s_out, t_out, kind, temperature)}
            total = parts["output"]
            if y is not None and kind == "kd" and alpha < 1:
                parts["labels"] = F.cross_entropy(s_out, y.to(s_dev))
                total = alpha * parts["output"] + (1 - alpha) * parts["labels"]
            if names:
                feats = [
                    _normalized_mse(f_student.out[n], f_teacher.out[n].detach().to(s_dev))
                    for n in names
                    if n in f_student.out and n in f_teacher.out
                ]
                if feats:
                    parts["features"] = torch.stack(feats).mean()
                    total = total + feature_weight * parts["features"]
            if not torch.isfinite(total):
                raise ValueError(
                    f"the loss became {float(total)} at step {step}: lower lr (now {lr:g})"
                )
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            f_student.out.clear()
            f_teacher.out.clear()
            for k, v in (("loss", total), *parts.items()):
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            if step % log_every == 0 or step == steps:
                entry = {"step": step, "epoch": epoch_at(step), "lr": opt.param_groups[0]["lr"]}
                entry.update({k: v / count for k, v in sums.items()})
                report.history.append(entry)
                sums, count = {}, 0
                if bar is not None:
                    bar.update(bar.task_ids[0], info=f"loss {entry['loss']:.4g}")
            if bar is not None:
                bar.advance(bar.task_ids[0])
            if step % eval_every == 0 and step != steps:
                evaluate(step)
                student.train()
                if not train_bn:
                    for m in student.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
    finally:
        if bar is not None:
            bar.stop()
        student.eval()
        for m, mode in teacher_modes.items():
            m.training = mode
    evaluate(steps)
    report.seconds = time.perf_counter() - t0
    return report
