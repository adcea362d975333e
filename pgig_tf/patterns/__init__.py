"""PatternNet/PatternAttribution patterns: the `Patterns` container, Eq. 2 fitting, and the reference VGG16 file format."""

from pgig_tf.patterns.fitting import fit_patterns
from pgig_tf.patterns.patterns import Patterns

__all__ = ["Patterns", "fit_patterns"]
