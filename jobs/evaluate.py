"""DiLED against its baselines (a VAE with KL annealing and free bits; two-stage autoencoder + latent
prior), trained by the same platform with the same codec, data and step budget, over several seeds.

    python jobs/evaluate.py                                   # text, 3 seeds x 3 models, < 1 hour on 2 CPUs
    python jobs/evaluate.py --preset protein-cpu --seeds 0 1 2   # any preset: its data type's report and metrics
    python jobs/evaluate.py --task protein                    # the same: a data type's own CPU preset
    python jobs/evaluate.py --task protein --models vae --vae-free-bits 0.5 --out runs/eval-protein-fb
    python jobs/evaluate.py --task image --models diled two-stage --steps 2000
    python jobs/evaluate.py --steps 100 --seeds 0 --out runs/eval-smoke      # a quick look
    python jobs/evaluate.py --optim.lr=1e-3                   # any --section.key=value preset override

Writes to --out (default runs/eval-<data type>): table.md and table.csv (mean +/- std per metric, best in bold
by the stated rule), table.png (the numbers behind it, seeds as dots), results.json (every run's metrics,
the budget, the reference LM's size and held-out perplexity), and each model's run folder under runs/
with its samples, reconstructions and interpolations. Re-running with the same --out loads the models
already trained and trains only the missing ones.
"""

import argparse
import logging
import sys
from pathlib import Path

import _path  # noqa: F401  (repository on sys.path)

from diled_platform.comparison.baselines import BASELINES
from diled_platform.config import load_config, preset_names, replace
from diled_platform.datatypes import builtin_names, datatype_class, datatype_for
from diled_platform.comparison.evaluation import MODELS, run_comparison
from diled_platform.training.runtime import init_ray


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Any --section.key=value overrides a preset value.")
    parser.add_argument("--task", choices=builtin_names(), default="text",
                        help="a data type: its CPU preset, unless --preset names another")
    parser.add_argument("--preset", help=f"default: the data type's CPU preset ({', '.join(preset_names())})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", choices=BASELINES, default=list(MODELS))
    parser.add_argument("--steps", type=int, help="training steps per model (default: the data type's budget)")
    parser.add_argument("--out", help="output folder (default runs/eval-<data type>)")
    parser.add_argument("--lm-steps", type=int, default=800, help="text: reference LM training steps")
    parser.add_argument("--vae-beta", type=float, help="the VAE's KL weight (default: the task's)")
    parser.add_argument("--vae-free-bits", type=float,
                        help="the VAE's free bits, nats per latent dimension (default: text 0.5, else 0)")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and the config, print them, run nothing")
    args, overrides = parser.parse_known_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    vae = {k: v for k, v in (("beta", args.vae_beta), ("free_bits", args.vae_free_bits)) if v is not None}
    if any(v < 0 for v in vae.values()):
        parser.error(f"--vae-beta and --vae-free-bits must be >= 0, got {vae}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.preset or datatype_class(args.task).preset, overrides)
    if args.dry_run:
        print(f"ok: task {args.task}, preset {args.preset or datatype_class(args.task).preset}, models "
              f"{', '.join(args.models)}, seeds {args.seeds}")
        return 0
    datatype = datatype_for(cfg)
    steps = args.steps or datatype.harness_steps
    # one checkpoint at the end: the budget goes to training
    cfg = replace(cfg, optim={"max_steps": steps, "warmup_steps": min(cfg.optim.warmup_steps, steps // 5)},
                  run={"checkpoint_every": steps})
    out = Path(args.out or f"runs/eval-{datatype.name}").expanduser().resolve()
    init_ray()
    run_comparison(datatype, cfg, out, args.seeds, args.models, vae, {"lm_steps": args.lm_steps})
    print(f"\nwritten: {out / 'table.md'}, {out / 'table.csv'}, {out / 'table.png'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
