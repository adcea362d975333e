"""Judging attributions: perturbation curves (MoRF/LeRF, insertion/deletion, ROAD), statistics, smoothness, sanity, axioms.

Modules: `degradation` (the paper's degradation curve and AUPC), `perturbation` (both orders,
replacements incl. ROAD's `imputation`, insertion/deletion, SRG), `statistics` (bootstrap
intervals, paired differences, ranks), `smoothness` (AUTVC), `sanity` (model randomisation),
`benchmark` (the resumable, shardable runner), `axioms`.
"""
