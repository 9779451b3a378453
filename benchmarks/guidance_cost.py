"""What guidance costs: latents per second sampled by DDIM with no guidance, with classifier guidance (a
``LatentClassifier``'s gradient at every step, autograd inside the sampler) and with classifier-free
guidance (the conditional and unconditional predictions of a prior built with classes, one batched call),
and with two guides composed (a sentiment and a source, ``ComposedPrior``: one prior pass, two gradients),
for the priors the presets use. The networks are freshly initialised: cost does not depend on training.

    .venv/bin/python benchmarks/guidance_cost.py
    .venv/bin/python benchmarks/guidance_cost.py --n 100 --steps 50 --repeats 5 --threads 2

Prints one markdown table: latents/s (median over the repeats) per prior and kind, and each guided kind's
time as a ratio of the unguided sampling of the same prior.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRIORS = {  # the text preset's two priors and the image and protein presets' MLP
    "slot transformer 128 x 3 (text-cpu, D=512)": ({"name": "slot_transformer", "latent_dim": 512, "slots": 8,
                                                    "hidden": 128, "depth": 3, "heads": 4, "time_dim": 128}),
    "MLP 512 x 6 (text-cpu's joint prior, D=512)": ({"name": "mlp_skip", "latent_dim": 512, "hidden": 512,
                                                     "depth": 6, "time_dim": 128}),
    "MLP 256 x 4 (D=64)": ({"name": "mlp_skip", "latent_dim": 64, "hidden": 256, "depth": 4, "time_dim": 64}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="latents per sampling call")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the measurements here")
    args = parser.parse_args()
    import torch

    from _common import alternate, markdown_table, median
    from diled import DiLED, LatentDiffusion, VectorCodec, build_prior
    from diled.guidance import LatentClassifier

    torch.set_num_threads(args.threads)
    classes = ["negative", "positive"]
    rows, out = [], {}
    for label, spec in PRIORS.items():
        torch.manual_seed(0)
        d = spec["latent_dim"]
        codec = VectorCodec(data_dim=2, latent_dim=d, hidden=8, depth=1)
        diffusion = LatentDiffusion("linear", 200)
        plain = DiLED(codec, build_prior(spec), diffusion, w=1.0).eval()
        conditional = DiLED(codec, build_prior({**spec, "classes": classes}), diffusion, w=1.0).eval()
        plain.guide = LatentClassifier(d, classes)
        plain.guides = {"source": LatentClassifier(d, ["rotten_tomatoes", "tweets"])}
        z_T = torch.randn(args.n, d)
        fns = {
            "unguided": lambda: plain.sample_latents(args.n, steps=args.steps, z_T=z_T),
            "classifier guidance": lambda: plain.sample_latents(args.n, steps=args.steps, z_T=z_T,
                                                                condition="positive", guidance_scale=3.0),
            "classifier-free": lambda: conditional.sample_latents(args.n, steps=args.steps, z_T=z_T,
                                                                  condition="positive", guidance_scale=3.0),
            "two guides composed": lambda: plain.sample_latents(args.n, steps=args.steps, z_T=z_T,
                                                                condition=["positive", "tweets"], guidance_scale=3.0),
        }
        times = alternate(fns, args.repeats)
        base = median(times["unguided"])
        out[label] = {k: {"latents_per_s": args.n / median(v), "ratio": median(v) / base} for k, v in times.items()}
        rows.append([label] + [f"{args.n / median(v):,.0f} ({median(v) / base:.2f}x)" for v in times.values()])
        print(f"{label}: " + ", ".join(f"{k} {args.n / median(v):,.0f}/s" for k, v in times.items()), flush=True)
    print()
    print(f"DDIM-{args.steps}, {args.n} latents per call, {args.threads} threads; latents/s (time vs unguided)")
    print(markdown_table(["prior", "unguided", "classifier guidance", "classifier-free", "two guides composed"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "steps": args.steps, "threads": args.threads,
                                               "results": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
