"""What samplers return: samples plus the diagnostics that certify (or bound) them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParticleDiagnostics:
    """Diagnostics of one particle-method run (smc, importance).

    ess_trace  effective sample size (sum w)^2 / sum w^2 after each step, before resampling
    log_z_hat  log of the average unnormalised final weight: an unbiased estimate of Z in
               expectation (so log Z-hat is biased low by Jensen, consistent as N grows)
    resamples  how many times resampling was triggered
    all_dead   True when every particle ended with weight 0 (e.g. all hit a -inf reward):
               log_z_hat is then -inf and the returned sample is NOT a draw from pi*
    survivors  how many of the run's particles have a non-zero final weight (finite final
               log-weight): the ones the returned draw was chosen among; 0 exactly when
               all_dead, ``particles`` when no hard constraint killed any
    """

    particles: int
    ess_trace: list[float] = field(default_factory=list)
    log_z_hat: float = float("nan")
    resamples: int = 0
    all_dead: bool = False
    survivors: int = 0


@dataclass
class Sample:
    """One completion and its diagnostics.

    tokens        completion ids, EOS excluded
    finished      True if it ended with EOS chosen before the length cap, False if forced
                  by max_tokens ("length")
    reward        R(x, y) when a reward was given
    log_weight    log pi_ref(y) + R/beta - log q(y): the importance weight of y under the
                  proposal that produced it (None where not defined, e.g. best_of_n)
    kl_to_base    an estimate of KL(sampling distribution || pi_ref) in nats for this run:
                  none/token: sum over steps of the exact per-step KL; smc/importance:
                  weighted E[R]/beta - log Z-hat (clipped at 0; None when all particles
                  died); best_of_n: the bound log N - (N-1)/N; blockwise: the bound
                  blocks * (log K - (K-1)/K) (argmax) or blocks * log K (sample)
    base_logprob  log pi_ref(y) including the final EOS when finished
    token_logprobs  per-token log-probs of the distribution actually sampled from
    """

    tokens: list[int]
    finished: bool
    reward: float | None = None
    log_weight: float | None = None
    kl_to_base: float | None = None
    base_logprob: float = 0.0
    token_logprobs: list[float] = field(default_factory=list)
    particle: ParticleDiagnostics | None = None
