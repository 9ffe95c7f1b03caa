"""Train PixelFace+ from a checkout: the body is pixelface.commands.train (also `pixelface-train`).

    torchrun --nproc_per_node N code/main.py --cfg cfg/X.yml [--set KEY.SUB=VALUE ...] [--resume auto|PATH]
    python code/main.py --cfg cfg/X.yml          # one process, no launcher needed
"""
import sys

from pixelface.commands.launch import train as main

if __name__ == "__main__":
    sys.exit(main())
