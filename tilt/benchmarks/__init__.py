"""The measurements behind ``tilt bench`` (commands in ``tilt/cmd_bench.py``).

    throughput   guided vs unguided tokens/s on one engine, beside the ideal M / (M + m)
    optimum      the exact tilted frontier E_{pi*}[R] vs KL(pi* || pi_ref) of a task, by
                 self-normalised importance sampling from base samples
"""
