"""Engine-agnostic math and samplers for energy-tilted decoding.

pi*(y|x) ∝ pi_ref(y|x) · exp(R(x,y) / beta), sampled exactly at the token level by adding
soft value corrections Q(s, .)/beta to the base logits (see docs/math.md).

Public names: ``generate`` (decoders.generate), ``GuidanceSpec`` (decoders.spec),
``Sample`` / ``ParticleDiagnostics`` (decoders.results), ``ExactValue`` (decoders.exact),
``token_rewards_from_logprobs`` (decoders.bijection). Import them from their modules, e.g.
``from decoders.generate import generate``.
"""
