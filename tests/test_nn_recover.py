"""sepconv.nn.recover: distillation losses, the trajectory it reports, and what it leaves alone."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sepconv.nn import convert, recover
from sepconv.nn.models import small_cnn

recover_module = sys.modules["sepconv.nn.recover"]


def teacher_student(seed: int = 0, classes: int = 5) -> tuple[nn.Module, nn.Module]:
    """A random small CNN whose batch norms know their inputs' statistics (as a trained
    model's do), and its depthwise rank-1 conversion."""
    torch.manual_seed(seed)
    teacher = small_cnn(width=8, depth=2, num_classes=classes, resolution=12)
    for m in teacher.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative averages
    with torch.no_grad():
        teacher.train()(torch.randn(256, 3, 12, 12))
    teacher.eval()
    student, _ = convert(teacher, rank=1, input_shape=(1, 3, 12, 12))
    return teacher, student


def relative_error(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        s = student.eval()(x).double().numpy()
        t = teacher.eval()(x).double().numpy()
    return float(np.linalg.norm(s - t) / np.linalg.norm(t))


def kl_to_teacher(student: nn.Module, teacher: nn.Module, x: torch.Tensor, T: float) -> float:
    """mean over samples of KL(softmax(t / T) || softmax(s / T)), in numpy."""
    with torch.no_grad():
        s = student.eval()(x).double().numpy() / T
        t = teacher.eval()(x).double().numpy() / T
    ls = s - s.max(1, keepdims=True)
    ls -= np.log(np.exp(ls).sum(1, keepdims=True))
    lt = t - t.max(1, keepdims=True)
    lt -= np.log(np.exp(lt).sum(1, keepdims=True))
    return float(np.mean(np.sum(np.exp(lt) * (lt - ls), 1)))


def test_mse_distillation_lowers_the_output_error_and_reports_it():
    teacher, student = teacher_student(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 3, 12, 12, generator=gen)
    x_eval = torch.randn(64, 3, 12, 12, generator=gen)
    start = relative_error(student, teacher, x_eval)
    report = recover(student, teacher, x, steps=30, lr=3e-3, batch_size=32, loss="mse",
                     eval_data=x_eval, progress=False)  # fmt: skip
    first, last = report.evaluations[0], report.evaluations[-1]
    assert first["step"] == 0 and last["step"] == 30
    # the reported errors are the ones computed here, independently, before and after
    assert first["output_error"] == pytest.approx(start, rel=1e-6)
    after = relative_error(student, teacher, x_eval)
    assert last["output_error"] == pytest.approx(after, rel=1e-6)
    assert after < 0.8 * start
    assert not student.training and not teacher.training
    assert report.accuracy_before is None and "agreement" in last  # no labels


def test_kd_lowers_the_divergence_from_the_teacher():
    # KD matches softened probabilities (invariant to a shift of each row of scores): the
    # divergence it minimises, computed here in numpy, goes down
    teacher, student = teacher_student(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 3, 12, 12, generator=gen)
    x_eval = torch.randn(64, 3, 12, 12, generator=gen)
    start = kl_to_teacher(student, teacher, x_eval, 4.0)
    report = recover(student, teacher, x, steps=30, lr=3e-3, batch_size=32, progress=False)
    assert report.settings["loss"] == "auto" and report.history[-1]["output"] > 0
    assert kl_to_teacher(student, teacher, x_eval, 4.0) < 0.8 * start


def test_labels_accuracy_agreement_and_teacher_accuracy():
    teacher, student = teacher_student(2, classes=3)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 3, 12, 12, generator=gen)
    y = torch.randint(0, 3, (60,), generator=gen)
    report = recover(student, teacher, (x, y), steps=4, batch_size=20, eval_data=(x, y),
                     progress=False)  # fmt: skip
    with torch.no_grad():
        s = student(x).argmax(1).numpy()
        t = teacher(x).argmax(1).numpy()
    last = report.evaluations[-1]
    assert last["accuracy"] == pytest.approx(np.mean(s == y.numpy()))
    assert last["agreement"] == pytest.approx(np.mean(s == t))
    assert report.teacher_accuracy == pytest.approx(np.mean(t == y.numpy()))
    assert all("labels" in h for h in report.history)
    doc = report.to_dict()
    assert doc["accuracy_after"] == last["accuracy"] and doc["schema"] == 1
    assert "accuracy" in str(report)


def test_history_steps_epochs_and_the_cosine_schedule():
    teacher, student = teacher_student(3)
    x = torch.randn(50, 3, 12, 12)
    report = recover(student, teacher, x, epochs=2, batch_size=16, lr=0.01, log_every=2,
                     progress=False)  # fmt: skip
    # 50 samples in batches of 16: 4 batches an epoch
    assert report.steps == 8 and report.epochs == 2.0
    assert [h["step"] for h in report.history] == [2, 4, 6, 8]
    for h in report.history:  # lr after step i: 0.01 * (1 + cos(pi i / 8)) / 2
        assert h["lr"] == pytest.approx(0.005 * (1 + math.cos(math.pi * h["step"] / 8)), abs=1e-12)
        assert h["epoch"] == h["step"] / 4
    assert report.evaluations == []  # no eval_data


def test_kd_loss_is_hintons_closed_form():
    gen = torch.Generator().manual_seed(4)
    s, t = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    T = 3.0

    def softmax(a: np.ndarray) -> np.ndarray:
        e = np.exp(a - a.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(s.numpy() / T), softmax(t.numpy() / T)
    expected = T * T * np.sum(pt * (np.log(pt) - np.log(ps))) / 6
    got = float(recover_module._output_loss(s, t, "kd", T))
    assert got == pytest.approx(expected, rel=1e-5)
    mse = float(recover_module._output_loss(s, t, "mse", T))
    assert mse == pytest.approx(np.mean((s - t).numpy() ** 2) / np.mean(t.numpy() ** 2), rel=1e-5)


def test_feature_matching_and_non_class_outputs():
    torch.manual_seed(5)
    teacher = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)
    ).eval()
    student, conv_report = convert(teacher, rank=1, input_shape=(1, 2, 10, 10))
    names = [r.name for r in conv_report.converted]
    x = torch.randn(40, 2, 10, 10)
    start = relative_error(student, teacher, x)
    report = recover(student, teacher, x, steps=25, lr=3e-3, batch_size=20, features=names,
                     eval_data=x, progress=False)  # fmt: skip
    assert report.settings["features"] == names
    assert all("features" in h for h in report.history)
    assert "agreement" not in report.evaluations[-1]  # outputs are maps, not class scores
    assert report.evaluations[-1]["output_error"] < start
    with pytest.raises(ValueError, match=r"features names \['nope'\]"):
        recover(student, teacher, x, steps=1, features=["nope"], progress=False)


def test_a_dataloader_is_cycled_and_the_teacher_is_untouched():
    teacher, student = teacher_student(6)
    saved = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()  # its modes are restored afterwards
    x, y = torch.randn(30, 3, 12, 12), torch.randint(0, 5, (30,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    report = recover(student, teacher, loader, steps=9, progress=False)
    assert report.steps == 9 and report.epochs == 9 / 4
    assert teacher.training and all(m.training for m in teacher.modules())
    now = teacher.state_dict()  # BN running statistics included
    assert all(torch.equal(now[k], saved[k]) for k in saved)


def test_same_seed_same_trajectory():
    runs = []
    for _ in range(2):
        teacher, student = teacher_student(7)
        x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(3))
        runs.append(recover(student, teacher, x, steps=4, batch_size=8, log_every=1, seed=9,
                            progress=False).history)  # fmt: skip
    assert [h["loss"] for h in runs[0]] == [h["loss"] for h in runs[1]]


def test_argument_errors():
    teacher, student = teacher_student(8)
    x = torch.randn(8, 3, 12, 12)
    cases = [
        (dict(steps=2, epochs=1), ValueError, "give steps or epochs, not both"),
        (dict(loss="kl"), ValueError, "loss must be one of"),
        (dict(schedule="step"), ValueError, "schedule must be one of"),
        (dict(alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
        (dict(lr=0), ValueError, "lr must be"),
        (dict(steps=0), ValueError, "steps must be"),
        (dict(features="conv"), TypeError, "features must be a sequence of module names"),
        (dict(eval_data=[1, 2, 3]), TypeError, "eval_data must be a tensor"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            recover(student, teacher, x, progress=False, **kwargs)
    with pytest.raises(ValueError, match="student and teacher must be different modules"):
        recover(teacher, teacher, x, steps=1)
    with pytest.raises(TypeError, match="data must be a tensor of inputs"):
        recover(student, teacher, 3, steps=1)
    with pytest.raises(ValueError, match="inputs and labels of the same length"):
        recover(student, teacher, (x, torch.zeros(3, dtype=torch.long)), steps=1)
    with pytest.raises(ValueError, match="epochs needs data of known length"):
        recover(student, teacher, iter([x]), epochs=1)
    with pytest.raises(TypeError, match=r"student must be a torch\.nn\.Module"):
        recover("model", teacher, x, steps=1)
