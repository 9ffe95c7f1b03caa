"""Contrastively pretrain a small CLIP (TEXT.CUSTOM) on a dataset's image-caption pairs.

    python scripts/pretrain_clip.py --cfg cfg/synthface.yml --out models/clip_synthface_p8.pt

Prints text->image retrieval top-1/top-5 on the test split after every epoch and stores the final figures
in the checkpoint. The text encoder loads the result with TEXT.MODEL: custom, TEXT.PRETRAINED: <file>.
Without --out the file goes where the config's TEXT.PRETRAINED points. An existing file is never
overwritten unless --force is given.
"""
import argparse
import sys

from pixelface.core import cli
from pixelface.core.config import ConfigError, load_config, resolve_path
from pixelface.training.clip_pretrain import pretrain_clip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="config file (DATA picks the dataset, TEXT.CUSTOM the model)")
    parser.add_argument("--out", help="checkpoint to write (default: the config's TEXT.PRETRAINED)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--epochs", type=int, help="passes over the train images (default TEXT.PRETRAIN_EPOCHS)")
    parser.add_argument("--batch", type=int, default=64, help="image-caption pairs per contrastive batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--seed", type=int, help="initialisation and batch order (default: the config's SEED)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    args = parser.parse_args(argv)
    if (args.epochs is not None and args.epochs < 1) or args.batch < 2 or args.lr <= 0:
        parser.error("need --epochs >= 1, --batch >= 2 and --lr > 0")
    return cli.run(pretrain, args)


def pretrain(args) -> None:
    cfg = load_config(args.cfg, args.set)
    if args.out is None and not cfg.TEXT.PRETRAINED:
        raise ConfigError(f"{args.cfg}: TEXT.PRETRAINED is empty; give --out")
    out = args.out or resolve_path(cfg, "TEXT.PRETRAINED")
    _, metrics = pretrain_clip(cfg, out, args.epochs, args.batch, args.lr, args.seed, args.force)
    print(f"test text->image retrieval over {metrics['gallery']} images: top-1 {metrics['top1']:.3f}, "
          f"top-5 {metrics['top5']:.3f} (chance {metrics['chance_top1']:.4f} / {metrics['chance_top5']:.4f})")


if __name__ == "__main__":
    sys.exit(main())
