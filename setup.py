"""Installs pgig_tf. TensorFlow comes through an extra: [cpu] (tensorflow-cpu) or [gpu] (tensorflow[and-cuda])."""

from setuptools import find_packages, setup

setup(
    name="pgig_tf",
    version="0.1.0",
    description="Pattern-Guided Integrated Gradients and related attribution methods for Keras 3 on TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pgig_tf", "pgig_tf.*"]),
    python_requires=">=3.10",
    # TensorFlow itself is chosen by an extra so that a CPU-only machine never pulls the CUDA
    # wheels: `pip install .[cpu]` or `pip install .[gpu]`. A TensorFlow already installed
    # (any distribution, >= 2.16) also works with a plain `pip install .`.
    install_requires=[
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "numpy>=1.23",
        "matplotlib>=3.6",
        "scikit-learn>=1.2",  # the embedded default's real dataset (load_digits ships with it)
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "test": ["pytest>=7"],
    },
    entry_points={
        "console_scripts": [
            "pgig-stress-test=pgig_tf.cli.stress_test:main",
            "pgig-degradation-benchmark=pgig_tf.cli.degradation_benchmark:main",
            "pgig-explain=pgig_tf.cli.explain:main",
            "pgig-fit-patterns=pgig_tf.cli.fit_patterns:main",
            "pgig-sanity-check=pgig_tf.cli.sanity_check:main",
            "pgig-axioms=pgig_tf.cli.axioms:main",
            "pgig-ground-truth-benchmark=pgig_tf.cli.ground_truth_benchmark:main",
        ],
    },
)
