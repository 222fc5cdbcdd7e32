"""The comparative analysis: convergence, capacity, the aggregation over seeds, significance and timing.

Everything here is a pure function of numbers (a training log, a weight update, a
function to differentiate) or of the figures already written by the runs, so the
analysis of a finished comparison is recomputed cheaply from its files.

- ``qpeft.analysis.convergence``: loss curves, steps to a margin of the best loss,
  loss after a fraction of the budget, tail spread, gradient-norm statistics.
- ``qpeft.analysis.capacity``: singular values and effective rank of a linear update,
  numerical rank of a Jacobian, and their summary over a method's modules.
- ``qpeft.analysis.seeds``: mean and standard deviation of every figure over seeds.
- ``qpeft.analysis.significance``: the paired bootstrap over test items and seeds.
- ``qpeft.analysis.timing``: the median ratio of paired timings and its sign-test interval.
"""
