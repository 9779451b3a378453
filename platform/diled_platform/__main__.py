"""Use a saved DiLED model from the command line (no Python needed):

    python -m diled_platform encode      --model runs/text-cpu/model "a sentence" "another one"
    python -m diled_platform reconstruct --model runs/text-cpu/model --via inversion "a sentence"
    python -m diled_platform generate    --model runs/text-cpu/model -n 5 --steps 50 --seed 0
    python -m diled_platform interpolate --model runs/text-cpu/model --num 5 "first" "second"
    python -m diled_platform generate    --model runs/text-cpu/model -n 5 --condition positive --guidance 3
    python -m diled_platform edit        --model runs/text-cpu/model --condition positive --strength 0.6 "a sentence"
    python -m diled_platform generate    --model runs/text-cpu/model -n 5 --strategy greedy   # not the saved beam search
    python -m diled_platform generate    --url http://127.0.0.1:8000 -n 5 --seed 0   # a running service

With ``--url`` instead of ``--model`` the command calls a DiLED service (``jobs/serve.py``); its API key,
if it has one, comes from DILED_API_KEY or DILED_API_KEY_FILE.

Inputs come as arguments or, with ``--file PATH`` (``-`` for stdin), one per line; vector models take
JSON lists (``"[0.5, 1.0]"``). Output is JSON lines on stdout. Installed as the ``diled`` command too.
"""

from __future__ import annotations

import argparse
import json
import sys


def _inputs(args) -> list:
    items = list(args.inputs)
    if args.file:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            items += [line.rstrip("\n") for line in stream if line.strip()]
    if not items:
        raise SystemExit("error: no inputs (give them as arguments or with --file)")
    return items


def _parse(codec: str, input_kind: str, items: list[str]) -> list:
    """Command-line inputs as the codec's raw examples (its ``input_kind``): strings as they are, arrays
    from JSON lists."""
    if input_kind == "strings":
        return items
    try:
        return [json.loads(x) for x in items]
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {codec} models take JSON lists, e.g. \"[0.5, 1.0]\": {e}") from None


def _write_encoded(items, latents) -> None:
    for x, z in zip(items, latents):
        sys.stdout.write(json.dumps({"input": x, "latent": z}) + "\n")


def _write_outputs(items, outputs) -> None:
    for x, y in zip(items, outputs):
        sys.stdout.write(json.dumps({"input": x, "output": y}) + "\n")


def _write_interpolation(num, outputs) -> None:
    for k, y in enumerate(outputs):
        sys.stdout.write(json.dumps({"alpha": k / (num - 1), "output": y}) + "\n")


def _check_pair(items) -> None:
    if len(items) != 2:
        raise SystemExit(f"error: interpolate takes exactly two inputs, got {len(items)}")


def _decoding(args) -> dict:
    """The text decoding options given (none: the model's saved default)."""
    given = {"strategy": getattr(args, "strategy", None), "num_beams": getattr(args, "num_beams", None),
             "length_penalty": getattr(args, "length_penalty", None)}
    return {k: v for k, v in given.items() if v is not None}


def _judged(args) -> dict:
    """The judged-editing fields of an /edit request (none without --judged)."""
    if not args.judged:
        return {}
    return {"judged": True, "accept": args.accept,
            **({"min_similarity": args.min_similarity} if args.min_similarity is not None else {})}


def _edit_judged(model, args, items: list, dec: dict) -> list:
    """``diled.editing.edit_judged`` with the judge saved beside the model."""
    from diled.editing import JUDGED_SETTINGS, check_judge, edit_judged, load_judge

    try:
        judge = check_judge(load_judge(args.model), args.model, args.condition)
    except ValueError as e:
        raise SystemExit(f"error: --judged: {e}") from None
    from tqdm import tqdm

    with tqdm(total=len(JUDGED_SETTINGS), desc="judged editing: settings", unit="setting", file=sys.stderr,
              disable=None) as bar:  # disable=None: a bar only on a terminal
        return edit_judged(model, items, args.condition, judge.probability, accept=args.accept,
                           min_similarity=args.min_similarity, steps=args.steps,
                           progress=lambda done, total: bar.update(done - bar.n), **dec).outputs


def _remote(args) -> int:
    """The same commands against a running service."""
    from diled_platform.serving.client import DiLEDClient, DiLEDServiceError

    client = DiLEDClient(args.url)
    steps = {"steps": args.steps} if args.steps is not None else {}
    steps.update(_decoding(args))  # sent with every command that decodes, generate included
    try:
        health = client.health()
        if args.command == "generate":
            body = {"n": args.n, "sampler": args.sampler, **steps, **({"seed": args.seed} if args.seed is not None else {}),
                    **({"prior_temperature": args.prior_temperature} if args.prior_temperature is not None else {}),
                    **({"eta": args.eta} if args.eta is not None else {}),
                    **({"condition": args.condition, "guidance_scale": args.guidance} if args.condition else {})}
            for item in client.request("/generate", body)["outputs"]:
                sys.stdout.write(json.dumps({"output": item}) + "\n")
            return 0
        items = _parse(health["codec"], health["input_kind"], _inputs(args))
        if args.command == "encode":
            _write_encoded(items, client.encode(items))
        elif args.command == "reconstruct":
            _write_outputs(items, client.reconstruct(items, via=args.via, **steps))
        elif args.command == "edit":
            _write_outputs(items, client.edit(items, args.condition, strength=args.strength,
                                              guidance_scale=args.guidance, **_judged(args), **steps))
        else:
            _check_pair(items)
            _write_interpolation(args.num, client.interpolate(items[0], items[1], num=args.num, **steps))
    except DiLEDServiceError as e:
        raise SystemExit(f"error: the service refused the request: {e}") from None
    except OSError as e:
        raise SystemExit(f"error: cannot reach {args.url}: {e}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diled", description="Encode, reconstruct, generate and interpolate "
                                     "with a saved DiLED model.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="a save_pretrained folder (e.g. runs/<name>/model)")
    where.add_argument("--url", help="a running DiLED service (jobs/serve.py), e.g. http://127.0.0.1:8000")
    common.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50, or T if smaller)")
    common.add_argument("--dry-run", action="store_true", help="check the arguments, load nothing, run nothing")
    with_inputs = argparse.ArgumentParser(add_help=False)
    with_inputs.add_argument("inputs", nargs="*")
    with_inputs.add_argument("--file", help="read inputs, one per line, from this file ('-': stdin)")
    decoding = argparse.ArgumentParser(add_help=False)
    decoding.add_argument("--strategy", choices=["greedy", "beam"], default=None,
                          help="text: how to decode (default: the model's saved decoding, else greedy)")
    decoding.add_argument("--num-beams", type=int, default=None, help="text, beam search: beams per latent")
    decoding.add_argument("--length-penalty", type=float, default=None,
                          help="text, beam search: a sentence scores log-probability / length ** this")
    sub.add_parser("encode", parents=[common, with_inputs], help="print the representation mu(x)")
    rec = sub.add_parser("reconstruct", parents=[common, with_inputs, decoding], help="decode(encode(x))")
    rec.add_argument("--via", choices=["latent", "inversion"], default="latent")
    gen = sub.add_parser("generate", parents=[common, decoding], help="sample new items")
    gen.add_argument("-n", type=int, default=5)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    gen.add_argument("--prior-temperature", type=float, default=None, help="scale of the starting noise z_T "
                     "(default: the model's own, chosen on validation where its job searched for one)")
    gen.add_argument("--eta", type=float, default=None, help="DDIM's eta in [0, 1]: 0 deterministic, 1 fresh noise "
                     "at every step (default: the model's own; ddpm always 1)")
    inter = sub.add_parser("interpolate", parents=[common, with_inputs, decoding], help="points between two inputs")
    inter.add_argument("--num", type=int, default=5)
    guided = argparse.ArgumentParser(add_help=False)
    guided.add_argument("--guidance", type=float, action="append", default=None, help="guidance scale (default 3; "
                        "1: the conditional prior; larger: further toward the condition); with several --condition, "
                        "one for all or repeated, one each")
    gen.add_argument("--condition", action="append", default=None, help="a class the model knows (its guide's or "
                     "conditional prior's), e.g. positive; repeated, conditions of different labels compose "
                     "(--condition positive --condition rotten_tomatoes)")
    gen.add_argument("--guidance", type=float, action="append", default=None, help="guidance scale, with "
                     "--condition (default 3); repeated, one per --condition")
    edit = sub.add_parser("edit", parents=[common, with_inputs, guided, decoding], help="edit inputs toward a condition")
    edit.add_argument("--condition", action="append", required=True, help="a class the model knows, e.g. positive; "
                      "repeated, conditions of different labels compose")
    edit.add_argument("--strength", type=float, default=0.5, help="how far to invert before sampling back (0..1)")
    edit.add_argument("--judged", action="store_true", help="per input the closest of a grid of edits that the "
                      "judge saved beside the model accepts (--strength and --guidance unused)")
    edit.add_argument("--accept", type=float, default=0.8, help="with --judged: the judge's probability to accept")
    edit.add_argument("--min-similarity", type=float, default=2.0, help="with --judged: an accepted edit keeps "
                      "at least this much of its input (text: sentence BLEU; 2 was chosen on validation)")
    args = parser.parse_args(argv)
    for name, default in (("condition", None), ("guidance", 3.0)):  # one given: itself; several: a composition
        value = getattr(args, name, None)
        setattr(args, name, default if value is None else value[0] if len(value) == 1 else value)
    if args.dry_run:
        print(f"ok: {args.command}")
        return 0
    if args.url:
        return _remote(args)
    from diled import DiLED

    try:
        model = DiLED.from_pretrained(args.model)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    out, dec = sys.stdout, _decoding(args)
    try:
        if args.command == "generate":
            guided = {"condition": args.condition, "guidance_scale": args.guidance} if args.condition else {}
            for item in model.generate(args.n, steps=args.steps, sampler=args.sampler, seed=args.seed,
                                       prior_temperature=args.prior_temperature, eta=args.eta, **guided, **dec):
                out.write(json.dumps({"output": item}) + "\n")
            return 0
        items = _parse(model.codec.name, model.codec.input_kind, _inputs(args))
        if args.command == "edit" and args.judged:
            _write_outputs(items, _edit_judged(model, args, items, dec))
        elif args.command == "edit":
            _write_outputs(items, model.edit(items, args.condition, strength=args.strength,
                                             guidance_scale=args.guidance, steps=args.steps, **dec))
        elif args.command == "encode":
            _write_encoded(items, model.encode(items).tolist())
        elif args.command == "reconstruct":
            _write_outputs(items, model.reconstruct(items, via=args.via, steps=args.steps, **dec))
        else:
            _check_pair(items)
            _write_interpolation(args.num, model.interpolate(items[0], items[1], num=args.num, steps=args.steps, **dec))
    except ValueError as e:  # an unknown condition, a strength or a beam count out of range: named by the library
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
