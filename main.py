r"""The checkout's entry point: the flags and modes of the `gla-jax` command.

  python main.py --config=configs/demo.py --workdir=runs/demo     # the main job
  python main.py --config=demo --workdir=runs/demo                # the same, by name

`python main.py --help` lists the modes and flags (gla_jax/cli.py).
"""
from gla_jax import cli

if __name__ == '__main__':
  cli.main()
