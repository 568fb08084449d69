"""``fitnets`` command line: argv -> config -> run(). No training logic lives here.

A user error (FitnetsError) prints one paragraph and exits with code 2, no traceback; a
train or distill run that ended stalled at chance exits with FAILED_TO_LEARN (3).
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from fitnets.errors import FitnetsError

FAILED_TO_LEARN = 3  # train/distill: the run finished, but a stage ended stalled at chance

EPILOG = """\
Configuration: a YAML recipe (see recipes/) plus key=value overrides, e.g.
  fitnets distill recipes/mnist-fitnet.yaml teacher.weights=runs/teacher train.epochs=20
`fitnets config --doc` lists every key with its default, the values it allows and its meaning.

Exit status: 0 done; 1 a bug (traceback); 2 bad input or usage (one-line error);
3 train/distill: the run finished but FAILED to learn, a stage ended stalled at chance
(summary.json: stalled: true; a slow start that left chance is not a failure), and
search: no trial completed; 130 interrupted (continue with --resume)."""


def method_choices() -> tuple[str, ...]:
    """The methods the config accepts (its schema; fitnets.distill.methods implements them)."""
    from fitnets.config import Config

    return typing.get_args(typing.get_type_hints(Config)["method"])


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
    p.commands = sub.choices  # name -> subparser, for parse_args below

    d = sub.add_parser("demo", help="the whole method on scikit-learn's 8x8 digits (no download)")
    d.add_argument("--out", default="runs/demo", help="directory for the demo's runs")
    d.add_argument("--quick", action="store_true", help="a few epochs only (seconds)")

    _add_run_commands(sub)

    lay = sub.add_parser(
        "layers", help="a model's layers and output shapes, or candidate hint pairs",
        description="With a model: its layer names and output shapes. With --teacher and "
                    "--student: every (guided, hint) pair with the regressor it needs.")
    lay.add_argument("model", nargs="?", help="a built-in model name, pkg.mod:fn or file.py:fn")
    lay.add_argument("--input-shape", help="C,H,W, or T (tokens) for a text model "
                     "(default: the model's own)")
    lay.add_argument("--list", action="store_true", help="list the built-in models")
    lay.add_argument("--teacher", metavar="MODEL", help="list hint pairs: the teacher")
    lay.add_argument("--student", metavar="MODEL", help="list hint pairs: the student")
    lay.add_argument("--regressor", default="auto", metavar="KIND",
                     help="regressor kind to cost the pairs with (default auto)")

    pr = sub.add_parser("profile", help="the paper's Table 5: params, mults, time, speed-up")
    pr.add_argument("--teacher", required=True, metavar="MODEL", help="the reference model")
    pr.add_argument("--students", nargs="+", required=True, metavar="MODEL")
    pr.add_argument("--batch-size", type=int, default=128, help="images per timed batch")
    pr.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    pr.add_argument("--repeats", type=int, default=10, help="timed batches (median is kept)")
    pr.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    pr.add_argument("--input-shape", help="C,H,W, or T (tokens) for a text model "
                    "(default: the teacher's own)")
    pr.add_argument("--num-classes", type=int, default=10)
    pr.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    pr.add_argument("--pool-rounding", choices=("floor", "ceil"), default="floor",
                    help="the built-in maxout nets' pooled map sizes: floor (PyTorch's) or "
                         "ceil (cuda-convnet's, as the authors' code and the paper recipes)")

    ex = sub.add_parser("export", help="export a finished run's student (safetensors + config, "
                                       "state dict, torch.export, TorchScript, ONNX) and "
                                       "check the files",
                        description="Writes the student of RUN_DIR (its model.pt) in each "
                                    "format and checks every file against the PyTorch model. "
                                    "A language-model run (data.name=text) exports the same "
                                    "formats on int64 token ids with dynamic batch and "
                                    "sequence axes; config.json records its sizes, vocabulary "
                                    "and tokenizer (a Hugging Face tokenizer folder is copied "
                                    "in, an hf: student also gets its save_pretrained folder), "
                                    "so fitnets.load_exported and fitnets generate EXPORT_DIR "
                                    "need neither the run nor the tokenizer folder.")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/export)")
    ex.add_argument("--formats", nargs="+", metavar="FORMAT",
                    help="safetensors, state_dict, torch_export, torchscript and/or onnx "
                         "(default: all)")

    g = sub.add_parser(
        "generate", help="continue a prompt with a language-model run (data.name=text)",
        description="Loads RUN_DIR's best weights (model.pt) and its tokenizer (byte, or the\n"
                    "Hugging Face tokenizer folder the run recorded), or an export folder of\n"
                    "such a run; encodes PROMPT, samples --tokens new tokens one at a time\n"
                    "(the context cropped to the model's block size, data.block_size) and\n"
                    "prints prompt + continuation.",
        epilog="Examples:\n"
               "  fitnets generate runs/text-teacher \"def main(\" --tokens 100 "
               "--temperature 0      # greedy\n"
               "  fitnets generate runs/text-teacher \"import \" --temperature 0.8 --top-k 20 "
               "--seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("run_dir", metavar="RUN_DIR", help="a finished language-model run "
                   "directory, or its export folder")
    g.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    g.add_argument("--tokens", type=int, default=200, metavar="N",
                   help="new tokens to sample (default 200)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="softmax temperature; 0 is greedy, the most likely token (default 1)")
    g.add_argument("--top-k", type=int, metavar="K",
                   help="sample among the K most likely tokens only (default: all)")
    g.add_argument("--seed", type=int, metavar="S",
                   help="seed of the draw: the same seed, the same text (default: random)")

    se = sub.add_parser(
        "search", help="which layers to hint: search pairs, regressors, tau and lambda "
                       "(Optuna; pip install 'fitnets[search]')",
        description="Runs trials of a distillation recipe on a short budget, each an ordinary "
                    "run directory, sampled by Optuna's TPE and pruned on validation accuracy "
                    "(perplexity for text); writes a ranked table (results.md) and the best "
                    "trial's recipe (best.yaml). Several processes, here (--parallel) or on "
                    "other machines (the same --storage and --study), share one study.",
        epilog=SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    se.add_argument("args", nargs="*", metavar="RECIPE|KEY=VALUE",
                    help="a distillation recipe and key=value overrides (kept in best.yaml)")
    se.add_argument("--out", metavar="DIR", help="the search directory (default "
                    "runs/search-<recipe>-<time>)")
    se.add_argument("--trials", type=int, help="trials in the study (default: the recipe's "
                    "search.trials, 20)")
    se.add_argument("--parallel", type=int, metavar="P",
                    help="worker processes on this machine (they split the CPU cores; default "
                         "1, on --resume the search's own)")
    se.add_argument("--storage", metavar="URL", help="Optuna storage (default "
                    "sqlite:///DIR/study.db); the same URL elsewhere joins the study")
    se.add_argument("--study", metavar="NAME", help="study name (default: the recipe's name)")
    se.add_argument("--space", nargs="+", default=[], metavar="KEY=CHOICES",
                    help="searched keys: kd.tau=2,3,4 (choices), kd.tau=1:8:log (a range), "
                         "pair=conv4/conv2,conv3/conv2, or KEY= (not searched)")
    se.add_argument("--budget", nargs="+", default=[], metavar="KEY=VALUE",
                    help="each trial's short budget, e.g. train.epochs=3 hints.stage.epochs=1 "
                         "(not in best.yaml)")
    se.add_argument("--resume", metavar="DIR", help="continue a killed search")
    se.add_argument("--quiet", action="store_true", help="no progress display")

    c = sub.add_parser("config", help="print the resolved config, or every key (--doc)")
    c.add_argument("args", nargs="*", metavar="RECIPE|KEY=VALUE")
    c.add_argument("--doc", action="store_true", help="every key: default, allowed values, meaning")

    r = sub.add_parser("report", help="tables and learning-curve plots of finished or killed runs",
                       description="Reads only the run directories' files (config.yaml, "
                                   "metrics.jsonl, summary.json) and writes DIR/report.md and "
                                   "one curves-RUN.png per run. Image classifiers: test error "
                                   "at the last and best-validation epochs, multiplications "
                                   "per image, seed means. Language-model runs (data.name="
                                   "text): validation/test perplexity, next-token accuracy, "
                                   "the unigram perplexity (chance), training tokens/s, "
                                   "multiplications per token; given with image runs, each "
                                   "kind gets its own section. A search directory gets its "
                                   "ranked table.")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to report on")
    r.add_argument("--out", default="report", metavar="DIR", help="where report.md and the PNGs go")
    r.add_argument("--title", help="the report's title")
    return p


SEARCH_EPILOG = """\
Example (MNIST, 8 trials of 1 hint + 2 KD epochs on 10k images, 2 processes):
  fitnets search recipes/mnist-fitnet.yaml teacher.weights=RUN_DIR --trials 8 --parallel 2 \\
      --budget data.train_limit=10000 hints.stage.epochs=1 train.epochs=2 --out runs/search
  fitnets search --resume runs/search          # after a kill: finished trials are kept
  fitnets report runs/search                   # ranked table, history and importance plots
  fitnets distill runs/search/best.yaml        # the best trial at full length
Another machine joins with the same recipe, overrides and --storage URL (e.g.
postgresql://user@host/db; SQLite only where every process sees the same file)."""


def _add_run_commands(sub) -> None:
    """``fitnets train`` and ``fitnets distill``: a recipe, overrides and a few shortcuts."""
    methods = ", ".join(method_choices())
    for name, text in (("train", "train one network on labels (a teacher, or a baseline)"),
                       ("distill", f"train a student from a teacher: {methods}")):
        t = sub.add_parser(name, help=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        t.add_argument("args", nargs="*", metavar="RECIPE|KEY=VALUE",
                       help="a YAML recipe and/or key=value overrides")
        t.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a killed run from its last checkpoint")
        t.add_argument("--out", metavar="RUN_DIR", help="run directory (same as out=RUN_DIR)")
        t.add_argument("--quiet", action="store_true", help="no progress display")
        if name == "distill":
            t.add_argument("--method", choices=method_choices(),
                           help="same as method=...")
            t.add_argument("--teacher", metavar="MODEL", help="same as teacher.name=MODEL")
            t.add_argument("--student", metavar="MODEL", help="same as student.name=MODEL")
        else:
            t.add_argument("--model", metavar="MODEL", help="same as model.name=MODEL")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Like ArgumentParser.parse_args, but options may come after key=value words
    (``fitnets distill recipe.yaml teacher.weights=R --teacher T x.y=1``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # words after an option: parse the command's own arguments intermixed
        sub = parser.commands[args.command]
        return sub.parse_intermixed_args(argv[argv.index(args.command) + 1:],
                                         namespace=argparse.Namespace(command=args.command))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FitnetsError as e:
        print("fitnets: error: " + " ".join(str(e).split()), file=sys.stderr)  # one paragraph
        return 2
    except KeyboardInterrupt:
        print("\nfitnets: interrupted. A run continues from its last checkpoint with "
              "--resume RUN_DIR.", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``fitnets`` program (console script and ``python -m fitnets``): ``main``, then an
    exit that is safe for torchrun workers (see fitnets.distributed.leave)."""
    from fitnets import distributed

    try:
        code = main()
    except SystemExit as e:  # argparse's usage errors and --help
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # a bug: its traceback, then exit 1 as Python would
        import traceback

        traceback.print_exc()
        code = 1
    distributed.leave(code)
    raise SystemExit(code)


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
        for flag, key in (("method", "method"), ("teacher", "teacher.name"),
                          ("student", "student.name"), ("model", "model.name")):
            if getattr(args, flag, None):
                overrides.append(f"{key}={args.__dict__[flag]}")
        cfg = make_config(recipe, overrides)
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(args.command, recipe)
    summary = run(cfg, args.command, run_dir, resume=bool(args.resume),
                  verbose=not args.quiet)
    # finished, but a stage ended at chance: scripts see it in the exit status
    return FAILED_TO_LEARN if summary.get("stalled") else 0


def _layers(args: argparse.Namespace) -> int:
    from fitnets.models import MODELS, build_model
    from fitnets.models.counting import count_params

    if args.teacher or args.student:
        return _pairs(args)
    if args.list or not args.model:
        for name in MODELS:
            m = build_model(name)
            print(f"{name:18s} input {tuple(m.input_shape)}  {count_params(m):>10,} params  "
                  f"hint {getattr(m, 'default_hint', '-')}  guided "
                  f"{getattr(m, 'default_guided', '-')}")
        return 0
    model = build_model(args.model)
    shape = _input_shape(args.input_shape, model, args.model)
    from fitnets.distill.taps import layer_shapes

    shapes = layer_shapes(model, shape)
    print(f"{args.model}: input {'x'.join(map(str, shape))}")
    print(f"{'layer':28s} {'type':18s} {'output':>16s} {'params':>10s}")
    for name, module in model.named_modules():
        if name:
            taps = [t for t in shapes if t == name or t.startswith((name + "[", name + ":"))]
            n = sum(p.numel() for p in module.parameters())
            for i, tap in enumerate(taps or [name]):  # a tuple/dict output: one line a tensor
                out = "x".join(map(str, shapes[tap])) if tap in shapes else "(not run)"
                kind, count = (type(module).__name__, f"{n:,}") if i == 0 else ("", "")
                print(f"{tap:28s} {kind:18s} {out:>16s} {count:>10s}")
    return 0


def _input_shape(text: str | None, model, name: str) -> tuple[int, ...]:
    """--input-shape, else the model's own ``input_shape``; user models may have none."""
    if text:
        return _shape(text)
    if getattr(model, "input_shape", None) is None:
        raise FitnetsError(f"model '{name}' does not say what input it takes (no "
                           "input_shape attribute); give --input-shape C,H,W, e.g. 3,32,32 "
                           "(a text model: T, its token count, e.g. 128).")
    return tuple(model.input_shape)


def _pairs(args: argparse.Namespace) -> int:
    from fitnets.distill.regressor import KINDS
    from fitnets.distill.suggest import format_suggestions, suggest_pairs
    from fitnets.models import build_model

    if not (args.teacher and args.student):
        raise FitnetsError("listing hint pairs needs both --teacher MODEL and --student MODEL.")
    if args.regressor not in KINDS:
        raise FitnetsError(f"unknown regressor '{args.regressor}'; choose one of "
                           f"{', '.join(KINDS)}.")
    teacher, student = build_model(args.teacher), build_model(args.student)
    shape = _input_shape(args.input_shape, teacher, args.teacher)
    print(f"student {args.student} -> teacher {args.teacher}, input "
          f"{'x'.join(map(str, shape))}, regressor {args.regressor}")
    print(format_suggestions(suggest_pairs(student, teacher, shape, args.regressor)))
    print("use a pair with: hints.pairs=[[GUIDED, HINT]] hints.regressor=KIND")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from fitnets.models import MAXOUT_NETS, MaxoutOptions, build_model
    from fitnets.models.counting import format_profile, profile

    names = [args.teacher] + [s for s in args.students if s != args.teacher]
    pool = MaxoutOptions(pool_rounding=args.pool_rounding)
    models = {n: build_model(n, num_classes=args.num_classes,
                             maxout=pool if n in MAXOUT_NETS else None) for n in names}
    shape = _input_shape(args.input_shape, models[args.teacher], args.teacher)
    rows = profile(models, shape, batch_size=args.batch_size, device=args.device,
                   warmup=args.warmup, repeats=args.repeats, teacher=args.teacher)
    table = format_profile(rows)
    print(table)
    print(f"input {'x'.join(map(str, shape))}, batch {args.batch_size}, device {args.device}, "
          f"maxout pooling {args.pool_rounding}, "
          f"median of {args.repeats} batches; speed-up and compression relative to "
          f"{args.teacher}")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n")
        print(f"wrote {args.markdown}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fitnets.export import FORMATS, export_run

    run_dir = Path(args.run_dir)
    if not (run_dir / "model.pt").is_file():
        raise FitnetsError(f"'{run_dir}' has no model.pt: export needs the directory of a "
                           "finished run.")
    info = export_run(run_dir, args.out, tuple(args.formats or FORMATS))
    out = Path(args.out) if args.out else run_dir / "export"
    if info.get("task") == "causal-lm":
        tok = info["tokenizer"]
        print(f"exported {info['model']} (a language model: context {info['context']} tokens, "
              f"vocabulary {info['vocab_size']:,}, tokenizer {tok.get('from', tok['kind'])}) "
              f"to {out}")
    else:
        print(f"exported {info['model']} (input {'x'.join(map(str, info['input_shape']))}, "
              f"{info['num_classes']} classes) to {out}")
    for kind, entry in info["files"].items():
        diff = entry.get("max_abs_diff")
        check = f"max abs difference {diff:.2e}" if diff is not None else entry.get("check", "")
        print(f"  {kind:12s} {entry['path'] or '-':28s} {check or entry.get('what', '')}")
    for kind, why in info["skipped"].items():
        print(f"  {kind:12s} {why}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from fitnets.generation import generate

    out = generate(args.run_dir, args.prompt, tokens=args.tokens,
                   temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    print(out.text)
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
    from fitnets.config import Config, describe, dump_yaml, make_config
    from fitnets.config_rules import declared_rules

    if args.doc:  # key, default, the rule its values must follow (if any), meaning
        rules = {d.key: str(d.rule) for d in declared_rules(Config())}
        for key, default, doc in describe():
            print(f"{key:32s} {default:14s} {rules.get(key, ''):10s} {doc}" if default
                  else f"\n{key}: {doc}")
        return 0
    recipe, overrides = _split(args.args)
    print(dump_yaml(make_config(recipe, overrides)), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fitnets.demo import demo

    demo(Path(args.out), quick=args.quick)
    return 0


def _report(args: argparse.Namespace) -> int:
    from fitnets.report import report

    searches = [r for r in args.runs if (Path(r) / "search.json").is_file()]
    if searches:
        from fitnets.search import report_search

        if len(args.runs) > 1:
            raise FitnetsError("give one search directory at a time to fitnets report (or "
                               "run directories only).")
        path = report_search(Path(searches[0]), Path(args.out))
        print(path.read_text().split("## ")[0].rstrip())
        print(f"wrote {path}")
        return 0
    print(f"wrote {report(args.runs, args.out, args.title)}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from datetime import datetime

    from fitnets.search import search

    recipe, overrides = _split(args.args)
    out = args.resume or args.out
    if out is None:
        stem = Path(recipe).stem if recipe else "search"
        out = Path("runs") / f"search-{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    search(recipe, overrides, out, trials=args.trials, parallel=args.parallel,
           storage=args.storage, study=args.study, space=args.space, budget=args.budget,
           resume=bool(args.resume), verbose=not args.quiet)
    return 0


COMMANDS = {"train": _train_or_distill, "distill": _train_or_distill, "layers": _layers,
            "config": _config, "demo": _demo, "report": _report, "profile": _profile,
            "export": _export, "generate": _generate, "search": _search}

if __name__ == "__main__":
    raise SystemExit(main())
