"""Tools around training runs, one concept a module (commands in ``tilt/cmd_value_model.py``
and ``tilt/cmd_rollouts.py``).

    screen           token guidance of value models without vLLM: reward, KL, R - c·KL
    grow             a value model with one more layer and the same Q(s, .)
    merge_rollouts   the rollouts of two runs over consecutive prompt files as one rollouts.pt
"""
