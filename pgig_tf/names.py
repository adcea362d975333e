"""Names that need no TensorFlow (methods, perturbation replacements): the commands list them in --help before anything heavy is imported."""

# The keys of pgig_tf.analyzers.ANALYZERS, in the same order (a test keeps the two equal).
ANALYZER_NAMES = (
    "gradient",
    "input_t_gradient",
    "integrated_gradients",
    "guided_backprop",
    "pattern_net",
    "pattern_attribution",
    "pgig",
    "smoothgrad",
    "smoothgrad_squared",
    "vargrad",
    "smoothgrad_ig",
    "expected_gradients",
    "smooth_taylor",
    "noise_baseline_ig",
    "random",
)

# The paper's ten methods (§5) in its order, then SmoothTaylor (Goh et al., 2020) and the random control.
PAPER_METHODS = (
    "gradient",
    "input_t_gradient",
    "integrated_gradients",
    "smoothgrad_squared",
    "vargrad",
    "smoothgrad_ig",
    "expected_gradients",
    "guided_backprop",
    "pattern_attribution",
    "pgig",
)
DEFAULT_METHODS = PAPER_METHODS + ("smooth_taylor", "random")

# The replacements of removed patches in pgig_tf.evaluation.perturbation (its REPLACEMENTS).
PERTURBATION_REPLACEMENTS = ("image_mean", "own_patch_mean", "blur", "road")
