"""``fitnets`` command line: argv -> config -> run(). No training logic lives here.

A user error (FitnetsError) prints one paragraph and exits with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fitnets.errors import FitnetsError

EPILOG = """\
Configuration: a YAML recipe (see recipes/) plus key=value overrides, e.g.
  fitnets distill recipes/mnist-fitnet.yaml teacher.weights=runs/teacher train.epochs=20
`fitnets config --doc` lists every key with its default and meaning."""


def _split(items: list[str]) -> tuple[str | None, list[str]]:
    """Positional words -> (recipe or None, overrides)."""
    recipes = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    if len(recipes) > 1:
        raise FitnetsError(
            f"expected at most one recipe file and key=value overrides, got {recipes}. "
            "Overrides need an '=' (e.g. train.epochs=5)."
        )
    return (recipes[0] if recipes else None), overrides


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitnets", description="FitNets: hints for thin deep nets (Romero et al., 2015).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="the whole method on scikit-learn's 8x8 digits (no download)")
    d.add_argument("--out", default="runs/demo", help="directory for the demo's runs")
    d.add_argument("--quick", action="store_true", help="a few epochs only (seconds)")

    for name, text in (("train", "train one network on labels (a teacher, or a baseline)"),
                       ("distill", "train a student from a teacher: fitnet, kd or backprop")):
        t = sub.add_parser(name, help=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        t.add_argument("args", nargs="*", metavar="RECIPE|KEY=VALUE",
                       help="a YAML recipe and/or key=value overrides")
        t.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a killed run from its last checkpoint")
        t.add_argument("--out", metavar="RUN_DIR", help="run directory (same as out=RUN_DIR)")
        t.add_argument("--quiet", action="store_true", help="no progress display")
        if name == "distill":
            t.add_argument("--method", choices=["fitnet", "kd", "backprop"],
                           help="same as method=...")

    lay = sub.add_parser("layers", help="list a model's layer names and output shapes")
    lay.add_argument("model", nargs="?", help="a built-in model name")
    lay.add_argument("--input-shape", help="C,H,W (default: the model's own)")
    lay.add_argument("--list", action="store_true", help="list the built-in models")

    c = sub.add_parser("config", help="print the resolved config, or every key (--doc)")
    c.add_argument("args", nargs="*", metavar="RECIPE|KEY=VALUE")
    c.add_argument("--doc", action="store_true", help="every key, its default and meaning")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FitnetsError as e:
        print("fitnets: error: " + " ".join(str(e).split()), file=sys.stderr)  # one paragraph
        return 2
    except KeyboardInterrupt:
        print("\nfitnets: interrupted. A run continues from its last checkpoint with "
              "--resume RUN_DIR.", file=sys.stderr)
        return 130


def _train_or_distill(args: argparse.Namespace) -> int:
    from fitnets.config import make_config
    from fitnets.run import config_for_resume, default_run_dir, run

    recipe, overrides = _split(args.args)
    if args.resume:
        if recipe:
            raise FitnetsError("--resume takes its config from the run directory; drop the "
                               f"recipe '{recipe}'.")
        cfg = config_for_resume(args.resume, overrides)
        run_dir = Path(args.resume)
    else:
        if args.out:
            overrides.append(f"out={args.out}")
        if getattr(args, "method", None):
            overrides.append(f"method={args.method}")
        cfg = make_config(recipe, overrides)
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(args.command, recipe)
    run(cfg, args.command, run_dir, resume=bool(args.resume), verbose=not args.quiet)
    return 0


def _layers(args: argparse.Namespace) -> int:
    from fitnets.models import MODELS, build_model
    from fitnets.models.counting import count_params

    if args.list or not args.model:
        for name in MODELS:
            m = build_model(name)
            print(f"{name:18s} input {tuple(m.input_shape)}  {count_params(m):>10,} params  "
                  f"hint {getattr(m, 'default_hint', '-')}  guided "
                  f"{getattr(m, 'default_guided', '-')}")
        return 0
    model = build_model(args.model)
    shape = _shape(args.input_shape) if args.input_shape else tuple(model.input_shape)
    from fitnets.distill.taps import layer_shapes

    shapes = layer_shapes(model, shape)
    print(f"{args.model}: input {'x'.join(map(str, shape))}")
    print(f"{'layer':28s} {'type':18s} {'output':>16s} {'params':>10s}")
    for name, module in model.named_modules():
        if name:
            out = "x".join(map(str, shapes[name])) if name in shapes else "(not run)"
            n = sum(p.numel() for p in module.parameters())
            print(f"{name:28s} {type(module).__name__:18s} {out:>16s} {n:>10,}")
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(v <= 0 for v in shape):
        raise FitnetsError(f"--input-shape must look like 3,32,32 (C,H,W), got {text!r}.")
    return shape


def _config(args: argparse.Namespace) -> int:
    from fitnets.config import describe, dump_yaml, make_config

    if args.doc:
        for key, default, doc in describe():
            print(f"{key:32s} {default:14s} {doc}" if default else f"\n{key}: {doc}")
        return 0
    recipe, overrides = _split(args.args)
    print(dump_yaml(make_config(recipe, overrides)), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fitnets.demo import demo

    demo(Path(args.out), quick=args.quick)
    return 0


COMMANDS = {"train": _train_or_distill, "distill": _train_or_distill, "layers": _layers,
            "config": _config, "demo": _demo}

if __name__ == "__main__":
    raise SystemExit(main())
