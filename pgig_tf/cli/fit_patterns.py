"""Fits PatternNet/PatternAttribution patterns (Eq. 2) for a Keras model on a dataset and writes a patterns .npz.

With no arguments: the embedded digits CNN on its training digits. `--model vgg16 --dataset
imagenet2012 --manual-dir DIR` fits VGG16's patterns on ImageNet's training split, resumably.
"""

import argparse
import os


def main(argv=None):
    from pgig_tf.cli import console

    console.prepare()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits", help="digits (default), vgg16, or a .keras model file")
    parser.add_argument("--dataset", default="digits", help="digits (default) or a TFDS image dataset name")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-images", type=int, default=None, help="images to fit on (default: the whole split)")
    parser.add_argument("--kind", default="relu", choices=["relu", "linear"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="results/patterns.npz")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="batches between checkpoints (resumable)")
    parser.add_argument("--preprocessing", default="caffe225", help="vgg16: caffe225 or crop224")
    parser.add_argument("--weights", default="imagenet", help="vgg16 weights: imagenet, none, or a weights file")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--manual-dir", default=None)
    parser.add_argument("--seed", type=int, default=0, help="the digits model's seed")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    args = parser.parse_args(argv)

    console.import_tensorflow()
    import keras

    from pgig_tf import fit_patterns

    if args.dataset == "digits":
        from pgig_tf.datasets.digits import trained_digits_cnn

        if args.model == "digits":
            model, _, (x_train, _, _, _) = trained_digits_cnn(args.cache_dir, seed=args.seed)
        else:
            from pgig_tf.datasets.digits import load_digits_images

            model, x_train = keras.models.load_model(args.model, compile=False), load_digits_images(args.seed)[0]
        data = x_train[: args.num_images]
    else:
        from pgig_tf.datasets import imagenet

        console.plain_tfds_progress()  # preparing a dataset draws bars; a log gets none

        if args.model == "vgg16":
            preprocess, size = imagenet.PREPROCESSING[args.preprocessing]
            model = imagenet.build_vgg16(size, None if args.weights == "none" else args.weights)
        elif args.model == "digits":
            raise SystemExit("--dataset other than digits needs --model vgg16 or a .keras model file")
        else:
            model = keras.models.load_model(args.model, compile=False)
            preprocess = imagenet.unit_preprocessing(*model.inputs[0].shape[1:])
        data = (
            images
            for images, _ in imagenet.iterate_tfds_images(
                args.dataset,
                args.split,
                batch_size=args.batch_size,
                num_images=args.num_images,
                data_dir=args.data_dir,
                manual_dir=args.manual_dir,
                preprocess=preprocess,
            )
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    checkpoint = args.out + ".checkpoint.npz"
    patterns = fit_patterns(
        model,
        data,
        kind=args.kind,
        batch_size=args.batch_size,
        checkpoint=checkpoint,
        checkpoint_every=args.checkpoint_every,
    )
    patterns.save(args.out)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    print(f"fitted {len(patterns)} layers on {patterns.num_samples} images; wrote {args.out}")


if __name__ == "__main__":
    main()
