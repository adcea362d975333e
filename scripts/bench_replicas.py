"""Times IG, PGIG, SmoothGrad and fit_patterns on 1 device vs N replicas; same as `pgig-bench-replicas` (see --help)."""

from pgig_tf.cli.bench_replicas import main

if __name__ == "__main__":
    main()
