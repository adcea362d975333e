"""Judging attributions: perturbation curves (MoRF/LeRF, insertion/deletion, ROAD), localisation, statistics, smoothness, sanity, axioms.

Modules: `degradation` (the paper's degradation curve and AUPC), `perturbation` (both orders,
replacements incl. ROAD's `imputation`, insertion/deletion, SRG), `localization` (mass and
rank accuracy, distractor mass against known masks), `statistics` (bootstrap
intervals, paired differences, ranks), `faithfulness` (every perturbation metric per image
from one map, its resumable runner and summary table), `smoothness` (AUTVC), `sanity` (model
randomisation), `benchmark` (the resumable, shardable runner), `axioms`.
"""
