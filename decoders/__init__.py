"""Engine-agnostic math and samplers for energy-tilted decoding.

pi*(y|x) ∝ pi_ref(y|x) · exp(R(x,y) / beta), sampled exactly at the token level by adding
soft value corrections Q(s, .)/beta to the base logits (see docs/math.md).
"""
