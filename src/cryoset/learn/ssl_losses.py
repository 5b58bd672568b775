"""Losses of DINO + iBOT + KoLeo self-supervised training (definitions of the public DINOv3 code).

Notation: ``K`` prototypes, student temperature ``τ_s`` (0.1), teacher temperature ``τ_t``
(warmed up 0.04 → 0.07 in the cryoPANDA run).

* **Sinkhorn-Knopp centring** (:func:`sinkhorn_knopp`): the teacher's logits ``z`` (``n × K``)
  become ``Q = exp(z / τ_t)``, divided by its total, then ``n_iterations`` (3) times: each
  prototype's row is scaled to total ``1/K``, each sample's column to total ``1/n``; finally
  ``Q · n`` — every sample's target distribution sums to 1 and the prototypes are used about
  equally over the batch. Under ``torch.distributed`` the totals are all-reduced, so ``n`` and
  the prototype sums are those of the *global* batch.
* **DINO CLS loss** (:func:`dino_loss`): mean over samples and (student crop, teacher crop) pairs of
  the cross-entropy ``−Σ_k q_t,k log softmax(s / τ_s)_k``; with ``ignore_diagonal`` the pairs of a
  global crop with itself are left out (``global_ignore_diagonal`` true).
* **iBOT patch loss** (:func:`ibot_loss`): the same cross-entropy on the masked patch tokens of the
  global crops (student: mask tokens in; teacher: the unmasked crop), each masked patch weighted
  by ``1 / (masked patches of its image)``, summed and divided by the number of global-crop
  images (images without masks count in the denominator).
* **KoLeo** (:func:`koleo_loss`): Kozachenko–Leonenko entropy estimator on L2-normalised student
  CLS tokens: ``−mean_i log(‖x_i − x_nn(i)‖ + ε)`` with ``nn(i)`` the nearest other sample (``ε``
  1e-8; distance as ``torch.nn.PairwiseDistance(eps=1e-8)``). :func:`koleo_loss_grouped`
  applies it to consecutive groups (the paper: each GPU's 256 samples, not distributed).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["centred_softmax", "dino_loss", "ibot_loss", "koleo_loss", "koleo_loss_grouped", "sinkhorn_knopp",
           "updated_centre"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp centred teacher targets ``(n, K)`` (rows sum to 1); see the module docstring.

    Parameters
    ----------
    teacher_logits
        ``(n, K)`` teacher head outputs of this process (any float dtype; computed in float32).
    teacher_temp
        Teacher temperature ``τ_t``.
    n_iterations
        Row/column normalisation rounds (3 as published).
    """
    if teacher_temp <= 0:
        raise ValueError(f"teacher_temp must be positive, got {teacher_temp}")
    z = teacher_logits.float()
    # exp of shifted logits: the shift cancels in the first normalisation and avoids overflow
    shift = z.max() if z.numel() else z.new_zeros(())
    if _distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((z - shift) / teacher_temp).t()  # K × n
    n_local = torch.tensor(float(q.shape[1]), device=q.device)
    total = q.sum()
    if _distributed():
        dist.all_reduce(n_local)
        dist.all_reduce(total)
    k = q.shape[0]
    tiny = torch.finfo(torch.float32).tiny
    q = q / total
    for _ in range(n_iterations):
        rows = q.sum(dim=1, keepdim=True)
        if _distributed():
            dist.all_reduce(rows)
        q = q / rows.clamp(min=tiny) / k  # a prototype nobody uses (all underflowed) stays at 0
        q = q / q.sum(dim=0, keepdim=True).clamp(min=tiny) / n_local
    return (q * n_local).t()


@torch.no_grad()
def centred_softmax(teacher_logits: torch.Tensor, centre: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """DINOv1-style teacher targets ``softmax((z − c) / τ_t)`` ``(n, K)`` (the ``centering`` option).

    ``centre`` ``(K,)`` is an exponential moving average of the teacher's logits
    (:func:`updated_centre`); subtracting it keeps one prototype from taking every sample.
    """
    if teacher_temp <= 0:
        raise ValueError(f"teacher_temp must be positive, got {teacher_temp}")
    return F.softmax((teacher_logits.float() - centre.float()) / teacher_temp, dim=-1)


@torch.no_grad()
def updated_centre(centre: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """``m · c + (1 − m) · mean(z)``: the centre after one batch (mean over the *global* batch
    under ``torch.distributed``)."""
    z = teacher_logits.float()
    total = z.sum(dim=0)
    n = torch.tensor(float(z.shape[0]), device=z.device)
    if _distributed():
        dist.all_reduce(total)
        dist.all_reduce(n)
    if float(n) == 0.0:  # no rows anywhere (e.g. no masked patch in this batch): the centre stays
        return centre.float().clone()
    return momentum * centre.float() + (1.0 - momentum) * total / n


def dino_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float = 0.1, *,
              ignore_diagonal: bool = False) -> torch.Tensor:
    """Mean cross-entropy between teacher targets and student predictions over crop pairs.

    Parameters
    ----------
    student_logits
        ``(S, B, K)``: S student crops of B samples.
    teacher_probs
        ``(T, B, K)`` targets (rows summing to 1).
    ignore_diagonal
        Leave out pairs ``s == t`` (student and teacher see the same global crop).
    """
    s_crops, b, _ = student_logits.shape
    t_crops = teacher_probs.shape[0]
    logp = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    pair = -torch.einsum("sbk,tbk->st", logp, teacher_probs.float())  # summed over samples
    if not ignore_diagonal:
        return pair.sum() / (b * s_crops * t_crops)
    m = min(s_crops, t_crops)
    keep = ~torch.eye(s_crops, t_crops, dtype=torch.bool, device=pair.device)
    return (pair * keep).sum() / (b * (s_crops * t_crops - m))


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, weights: torch.Tensor, n_images: int,
              student_temp: float = 0.1) -> torch.Tensor:
    """iBOT masked-patch loss: ``−Σ_p w_p Σ_k q_p,k log softmax(s_p / τ_s)_k / n_images``.

    Parameters
    ----------
    student_logits, teacher_probs
        ``(M, K)`` for the M masked patches of this process.
    weights
        ``(M,)``: ``1 / (masked patches of the patch's image)``.
    n_images
        Global-crop images of this process (masked or not).
    """
    logp = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    per_patch = (teacher_probs.float() * logp).sum(dim=-1)
    return -(per_patch * weights.float()).sum() / max(int(n_images), 1)


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo regulariser of ``x`` ``(B, D)`` (B ≥ 2): ``−mean log(nearest-neighbour distance + ε)``."""
    if x.shape[0] < 2:
        raise ValueError("koleo_loss needs at least two samples")
    y = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = y @ y.t()
        dots.fill_diagonal_(-2.0)
        nn_index = dots.argmax(dim=1)
    dist_nn = F.pairwise_distance(y, y[nn_index], p=2, eps=eps)
    return -torch.log(dist_nn + eps).mean()


def koleo_loss_grouped(x: torch.Tensor, group: int, eps: float = 1e-8) -> torch.Tensor:
    """Mean :func:`koleo_loss` over consecutive groups of ``group`` rows (``B`` divisible by ``group``)."""
    b = x.shape[0]
    if group < 2 or b % group:
        raise ValueError(f"koleo group {group} must be ≥ 2 and divide the batch of {b}")
    losses = [koleo_loss(part, eps) for part in x.split(group)]
    return torch.stack(losses).mean()
