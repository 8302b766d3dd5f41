"""CoPE (`cope`; De Lange & Tuytelaars, "Continual Prototype Evolution", ICCV 2021), the third rehearsal baseline of SER
(Bellitto et al., NeurIPS 2024), with the hyperparameters of the SER authors' code: 256-d prototypes, T 0.05,
prototype momentum 0.9, 5 inner iterations per stream batch.

Network: the classifier's linear head is replaced by a `PrototypeHead`: pooled features -> Linear(C, cope_dim) ->
L2 normalisation, an embedding z on the unit sphere; each class seen so far has a prototype p_c on the same sphere.
Prediction is the nearest prototype in cosine: the head's logits are cos(z, p_c) / T (the lowest finite value for
classes not seen yet), so test accuracy, `ser evaluate`'s attacks and Grad-CAM all go through the prototypes.

One stream batch (x, y), on the shared skeleton (`Method`), with SER's saliency step first as for every method:
1. classes seen for the first time get a prototype: uniform in [0, 1]^D, normalised (the authors' initialisation);
2. `cope_iterations` inner iterations, each: a fresh class-balanced replay draw of `minibatch_size`, the PPP loss
   (`ppp_terms`) on the stream and replay embeddings together, one backward, one SGD step; no loss (and no step)
   while fewer than two classes have a prototype;
3. prototypes evolve without gradient: p_c <- normalise(m p_c + (1 - m) mean_c), m = `cope_momentum`, mean_c the mean
   embedding of class c over the stream samples of the last iteration and the replayed samples of every iteration
   (the authors' choice of samples), each taken from the forward pass of its iteration;
4. the stream batch is offered to the class-balanced buffer (`ClassBalancedBuffer`).
The prototypes and their flags are buffers of the head, so they are saved with the classifier (checkpoints and
`model.pt`) and a resumed run continues bit-exactly; the method itself keeps no other state.

What `ser` does differently from the authors' CoPE (both the original repository and the SER authors' `cope3`):
- The gradient is zeroed before every inner iteration. The authors zero it once per stream batch, so inner step k
  applies the sum of the gradients of iterations 1..k (the first iteration's gradient is applied k times).
- Class means divide by the number of samples. The authors' accumulator added the embedding width (256) to the
  count per class and per accumulation instead of the number of samples, so the "mean" was a near-zero vector and
  prototypes barely moved.
- Stream and replay embeddings come from two forward passes (SER needs the saliency branch's train-mode taps for
  the stream and eval-mode taps for replay, as in `er`); the authors concatenate them in one pass, so BatchNorm
  statistics differ.
- The PPP loss is computed in log space (`logsigmoid` / `logsumexp`): the same value, but no log(0) when a
  probability rounds to 1 at T = 0.05.
- The buffer is `ser`'s class-balanced one (CBRS rule: equal slots per seen class, a new class evicts from the
  largest, a reservoir within a full class), seeded and checkpointed like the reservoir buffer.
- Classes not seen yet score the lowest finite value rather than -inf, so a cross-entropy over all logits is finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.balanced_buffer import ClassBalancedBuffer
from ser_cli.continual.learner import Learner
from ser_cli.continual.methods.base import Method, StepLosses, StreamBatch
from ser_cli.continual.methods.registry import register_method
from ser_cli.continual.settings import TrainSettings
from ser_cli.models.prototype_head import PrototypeHead


def ppp_terms(z: Tensor, labels: Tensor, prototypes: Tensor, known: Tensor, temperature: float) -> dict[str, Tensor]:
    """The pseudo-prototypical proxy (PPP) loss of CoPE, as its attractor and repellor terms.

    With s(u, v) = <u, v> / T and, for a sample x and a class c, R(x, c) = sum over the other known classes k != c of
    exp(s(x, p_k)), the probability that x belongs to c "through" a proxy u of c is
    P(c | x; u) = exp(s(x, u)) / (exp(s(x, u)) + R(x, c)). For each sample x_i of class c in the batch:
    - attractor: log of the mean of P(c | x_i; u) over the proxies u of c: the prototype p_c and the other samples
      of class c in the batch (pseudo-prototypes); the proxies are constants (no gradient through them);
    - repellor: for each sample x_j of another class, log(1 - (P(c | x_j; x_i) + P(c | x_j; p_c)) / 2): x_j is
      pushed away from x_i (as a pseudo-prototype of c) and from p_c; gradients reach both x_i and x_j.
    Loss = -(sum of attractor terms + sum of repellor terms) / B.

    Args:
        z: Unit-norm embeddings of the stream and replay samples, (B, D).
        labels: Their classes, (B,); every class in it must have a prototype.
        prototypes: (K, D) unit-norm prototypes (rows of classes without one are ignored).
        known: bool (K,), which classes have a prototype; at least two.
        temperature: T.

    Returns:
        {"attractor": -sum_i attractor_i / B, "repellor": -sum_ij repellor_ij / B}.
    """
    b, k = len(labels), known.shape[0]
    sim_p = (z @ prototypes.to(z.dtype).t() / temperature).masked_fill(~known, -math.inf)  # (B, K)
    others = torch.eye(k, dtype=torch.bool, device=z.device)  # row c masks class c itself
    rest = sim_p[:, None, :].masked_fill(others, -math.inf).logsumexp(dim=2)  # (B, K): log R(x_j, c)
    same = labels[:, None] == labels[None, :]  # (B, B)
    to_own = sim_p.gather(1, labels[:, None])  # (B, 1): s(x_i, p_{y_i})
    # Attractor: rows are the samples x_i, columns their proxies (detached pseudo-prototypes, then the prototype).
    rest_own = rest.gather(1, labels[:, None])  # (B, 1)
    pseudo = F.logsigmoid(z @ z.detach().t() / temperature - rest_own)  # (B, B): log P(y_i | x_i; x_j)
    pseudo = pseudo.masked_fill(~same | torch.eye(b, dtype=torch.bool, device=z.device), -math.inf)
    log_p = torch.cat([pseudo, F.logsigmoid(to_own - rest_own)], dim=1)  # (B, B + 1)
    attract = log_p.logsumexp(dim=1) - same.sum(dim=1).to(z.dtype).log()  # (B,): log of the mean over the proxies
    # Repellor: entry (i, j) pushes x_j (of another class) away from class c = y_i.
    rest_c = rest[:, labels].t()  # (B_i, B_j): log R(x_j, y_i)
    via_sample = F.logsigmoid(rest_c - z @ z.t() / temperature)  # log(1 - P(y_i | x_j; x_i))
    via_proto = F.logsigmoid(rest_c - sim_p[:, labels].t())  # log(1 - P(y_i | x_j; p_{y_i}))
    repel = torch.logaddexp(via_sample, via_proto) - math.log(2)  # (B, B): log(1 - mean of the two)
    repel = torch.where(same, torch.zeros_like(repel), repel)
    return {"attractor": -attract.sum() / b, "repellor": -repel.sum() / b}


@torch.no_grad()
def momentum_update(prototypes: Tensor, embeddings: Tensor, labels: Tensor, momentum: float) -> Tensor:
    """CoPE's prototype evolution: p_c <- normalise(m p_c + (1 - m) mean of the embeddings of class c).

    Args:
        prototypes: (K, D) current prototypes.
        embeddings: (N, D) unit-norm embeddings.
        labels: (N,) their classes.
        momentum: m.

    Returns:
        (K, D) new prototypes; classes absent from `labels` keep theirs.
    """
    onehot = F.one_hot(labels, prototypes.shape[0]).to(embeddings.dtype)  # (N, K); a matmul sums deterministically
    counts = onehot.sum(dim=0)  # (K,)
    means = onehot.t() @ embeddings / counts.clamp_min(1)[:, None]  # (K, D)
    moved = F.normalize(momentum * prototypes + (1 - momentum) * means, dim=1)
    return torch.where(counts[:, None] > 0, moved, prototypes)


@dataclass
class CopeLosses(StepLosses):
    """`StepLosses` plus what the prototype update needs.

    Attributes:
        embeddings: Detached float32 embeddings of the stream then the replayed samples, (B + M, D).
        labels: Their classes, (B + M,).
        n_stream: B, the number of stream samples at the front.
    """

    embeddings: Tensor | None = None
    labels: Tensor | None = None
    n_stream: int = 0


@register_method("cope")
class CoPE(Method):
    """Prototype classifier trained with the PPP loss; momentum-evolved prototypes; class-balanced replay."""

    buffer_class = ClassBalancedBuffer

    def __init__(self, learner: Learner, settings: TrainSettings, buffer: ClassBalancedBuffer | None) -> None:
        """Put a `PrototypeHead` on the classifier, then build the optimiser (the projection is trained with it)."""
        s = settings
        head = PrototypeHead(learner.classifier.head.in_features, s.n_classes, s.cope_dim, s.cope_temperature)
        learner.set_head(head)
        super().__init__(learner, settings, buffer)

    @property
    def head(self) -> PrototypeHead:
        """The classifier's prototype head."""
        return self.learner.classifier.head

    def observe(self, batch: StreamBatch) -> dict[str, Tensor]:
        """One stream batch: new prototypes, `cope_iterations` PPP steps, prototype evolution, buffer update.

        Returns:
            Detached scalars averaged over the inner iterations: `attractor`, `repellor`, `loss`; `saliency_kld`
            with SER.
        """
        x = self.learner.normalize(batch.images)  # (B, 3, H, W)
        saliency = self.learner.saliency_step(x, batch.maps)
        n_known = self._add_prototypes(batch.labels)
        seen_z, seen_y, logs = [], [], []
        for i in range(self.settings.cope_iterations):
            out = self._inner_step(x, batch.labels, contrast=n_known >= 2)
            logs.append(out.terms)
            first = 0 if i == self.settings.cope_iterations - 1 else out.n_stream  # stream samples: last pass only
            seen_z.append(out.embeddings[first:])
            seen_y.append(out.labels[first:])
        self.learner.forget_stream_taps()  # after the last inner step's stream forward
        self.head.prototypes.copy_(momentum_update(self.head.prototypes, torch.cat(seen_z), torch.cat(seen_y),
                                                   self.settings.cope_momentum))
        self.buffer.add(batch.images, batch.labels, self.task)
        means = {name: torch.stack([t[name] for t in logs]).mean() for name in logs[0]}
        return {**means, "loss": sum(means.values()), **saliency}

    def _inner_step(self, x: Tensor, labels: Tensor, contrast: bool) -> CopeLosses:
        # A fresh gradient for every inner step: the authors zeroed it once per stream batch, so it accumulated.
        self.optimizer.zero_grad(set_to_none=True)
        with self.learner.autocast():
            out = self.losses(x, labels, contrast)
        if contrast:
            sum(out.terms.values()).backward()
            self.optimizer.step()
        out.terms = {name: t.detach() for name, t in out.terms.items()}
        return out

    def losses(self, x: Tensor, labels: Tensor, contrast: bool = True) -> CopeLosses:
        """PPP terms of the stream batch with one replay draw (zeros when `contrast` is off), and their embeddings."""
        z = self.head.embed(self.learner.pooled(x, "stream")).float()  # (B, D)
        y = labels
        if self.can_replay():
            xr, draw = self.replay(self.settings.minibatch_size)  # (M, 3, H, W)
            z = torch.cat([z, self.head.embed(self.learner.pooled(xr, "replay")).float()])  # (B + M, D)
            y = torch.cat([labels, draw["labels"]])
        if contrast:
            terms = ppp_terms(z, y, self.head.prototypes, self.head.known, self.settings.cope_temperature)
        else:
            terms = {"attractor": z.new_zeros(()), "repellor": z.new_zeros(())}
        stream_logits = self.head.similarities(z[: len(labels)].detach())
        return CopeLosses(terms, stream_logits, z.detach(), y, len(labels))

    @torch.no_grad()
    def _add_prototypes(self, labels: Tensor) -> int:
        """Give the classes of `labels` seen for the first time a prototype; returns how many classes have one."""
        head = self.head
        present = torch.zeros_like(head.known).index_fill_(0, labels, True)
        for c in (present & ~head.known).nonzero().flatten().tolist():
            # The global CPU generator (seeded, checkpointed by the loop), in class order: the same on any device.
            head.prototypes[c] = F.normalize(torch.rand(head.dim), dim=0).to(head.prototypes.device)
        head.known |= present
        return int(head.known.sum())
