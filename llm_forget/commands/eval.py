def add_parser(sub):
    p = sub.add_parser("eval", help="evaluate a model on your data (--forget/--retain) or a suite",
                       description="Evaluate a model: forget quality, model utility, extraction, membership "
                                   "inference, consistency with a retrained model. Your data: --forget F --retain R "
                                   "[--holdout H]; each metric runs where the rows support it, and what cannot be "
                                   "computed is said up front. Benchmarks: --suite quick|tofu|muse|PATH. "
                                   "Writes OUTPUT/results.json.")
    p.add_argument("--model", required=True, help="model folder or zoo name (tiny-target, smollm2-135m, ...)")
    p.add_argument("--forget", default=None, help="your forget rows (file, hf:..., builtin:...): members to forget")
    p.add_argument("--retain", default=None, help="your retain rows: what the model must keep")
    p.add_argument("--holdout", default=None,
                   help="rows of the same kind the model never trained on (non-members): MIA AUC and privleak "
                        "need them")
    p.add_argument("--allow_overlap", "--allow-overlap", action="store_true",
                   help="allow rows shared by forget, retain and holdout (an error otherwise)")
    p.add_argument("--suite", default=None,
                   help="a benchmark suite instead of your files: quick (the built-in benchmark), tofu, muse, "
                        "robustness, or a suite YAML path")
    p.add_argument("--retain-model", default=None,
                   help="model trained without the forget set (folder/zoo name), or its results.json")
    p.add_argument("--reference-model", default=None, help="model for the reference membership attack")
    p.add_argument("--target-model", default=None,
                   help="with --suite robustness: the model before unlearning, that attacks recover towards")
    p.add_argument("--data-dir", default=None,
                   help="local data folder: the mirror of Hub datasets (as LLM_FORGET_DATA_DIR) "
                        "and {data_dir} in a suite")
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="other suite variables, e.g. forget_split=forget05 or text_file=PATH (repeatable)")
    p.add_argument("--output", default=None, help="folder for results.json (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="recompute groups already in OUTPUT/results.json")
    p.add_argument("--batch-size", type=int, default=32,
                   help="sequences per scoring pass (default 32); generation batches twice as many rows")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of every dataset")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a CPU shared with other jobs, 1 is often fastest)")
    p.add_argument("--lanes", type=int, default=None,
                   help="on CPU: batches run side by side, each with an equal share of the threads "
                        "(default 1 = one batch at a time; 2 shares the model between two threads). Numbers do not change")
    p.add_argument("--chat-template", action="store_true", default=None,
                   help="wrap questions in the tokenizer's chat template (instruct models)")
    p.add_argument("--require-auc-below", type=float, default=None, metavar="X",
                   help="release gate: exit 1 when the headline MIA AUC is above X")
    p.set_defaults(run=run)


SHOWN = ["forget_quality", "model_utility", "mia_auc", "privleak", "forget_perplexity", "retain_perplexity",
         "forget_extraction_strength", "forget_exact_memorization", "forget_rougeL_recall", "retain_rougeL_recall",
         "forget_truth_ratio", "knowmem_forget", "knowmem_retain", "text_perplexity", "param_distance"]


def run(args):
    import sys

    from ..errors import UserError
    from ..evaluation.suite import evaluate

    variables = {}
    for kv in args.var:
        if "=" not in kv:
            raise UserError(f"--var {kv}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        variables[k.strip()] = v
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.data_dir:
        from ..data.hub import set_mirror

        set_mirror(args.data_dir)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    if args.lanes is not None and args.lanes < 1:
        raise UserError("--lanes must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    _check_model(args.model)
    own = [f"--{k}" for k in ("forget", "retain", "holdout") if getattr(args, k) is not None]
    if own and args.suite is not None:
        raise UserError(f"give your data ({' '.join(own)}) or --suite {args.suite}, not both")
    if not own and args.suite is None:
        raise UserError("what to evaluate on? your data: --forget F --retain R [--holdout H]; "
                        "or a benchmark: --suite quick|tofu|muse|PATH")
    if args.suite is None:
        return _own_data(args)
    from ..evaluation.robustness import is_attack_suite

    if is_attack_suite(args.suite) or args.target_model:  # robustness attacks: llm_forget/evaluation/robustness.py
        return run_robustness(args, variables)
    res = evaluate(args.model, args.suite, retain_model=args.retain_model, reference_model=args.reference_model,
                   output=args.output, overwrite=args.overwrite, batch_size=args.batch_size, data_dir=args.data_dir,
                   variables=variables, limit=args.limit, dtype=args.dtype, device=args.device,
                   progress=sys.stderr.isatty(), chat_template=args.chat_template, lanes=args.lanes,
                   allow_overlap=args.allow_overlap)
    return _report(args, res)


def _check_model(model: str) -> None:
    """A missing model folder is named before anything else (zoo models are built later, when used)."""
    from .. import zoo
    from ..zoo import resolve_model_path

    if model not in zoo.SOURCES:
        resolve_model_path(model)


def _own_data(args) -> int:
    """eval --forget F --retain R [--holdout H]: evaluation.plan.evaluate_files, with what cannot be
    computed printed before any model is loaded."""
    import sys

    from ..errors import UserError
    from ..evaluation.plan import evaluate_files

    if args.forget is None or args.retain is None:
        raise UserError("your data needs both --forget and --retain (and --holdout for membership metrics)")
    if args.data_dir or args.var or args.target_model:
        raise UserError("--data-dir, --var and --target-model belong to suites; with your data, give the files")

    def say(notes):
        for k, why in notes.items():
            print(f"not computed: {k}: {why}", file=sys.stderr)

    res = evaluate_files(args.model, args.forget, args.retain, args.holdout, retain_model=args.retain_model,
                         reference_model=args.reference_model, allow_overlap=args.allow_overlap, limit=args.limit,
                         chat_template=bool(args.chat_template), on_plan=say, output=args.output,
                         overwrite=args.overwrite, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                         progress=sys.stderr.isatty(), lanes=args.lanes)
    return _report(args, res)


def _report(args, res) -> int:
    import json
    import sys

    from ..errors import UserError

    s = res["summary"]
    keys = [k for k in SHOWN if k in s] + sorted(k for k in s if k.startswith("mia_auc_"))
    print(f"suite {res['suite']['name']} on {res['models']['model']['path']} ({res['wall_seconds']:.1f}s)")
    for k in keys:
        v = s[k]
        print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {json.dumps(v)}")
    for k, why in res.get("not_computed", {}).items():
        if k in SHOWN or k.endswith(("_truth_ratio", "_rougeL_recall")):
            print(f"  {k:32s} not computed: {why}")
    if args.output:
        print(f"results: {args.output}/results.json")
    if args.require_auc_below is not None:
        auc = s.get("mia_auc")
        if auc is None:
            raise UserError("--require-auc-below: no MIA AUC was computed ("
                            f"{res.get('not_computed', {}).get('mia_auc', 'the suite has no mia group')})")
        if auc > args.require_auc_below:
            print(f"FAILED release gate: MIA AUC {auc:.4f} is above {args.require_auc_below}", file=sys.stderr)
            return 1
        print(f"release gate passed: MIA AUC {auc:.4f} <= {args.require_auc_below}")
    return 0


# ------------------------------------------------------------------ robustness suites

def format_table(res: dict) -> str:
    """A plain-text table: attack, variant, before → after, recovery, retain recovery."""
    lines = [f"{'attack':16s} {'variant':22s} {'before':>8s} {'after':>8s} {'target':>8s} {'recovery':>9s} "
             f"{'retain':>8s}"]
    for name, out in res["attacks"].items():
        for v, d in out.items():
            if not isinstance(d, dict) or "model" not in d:
                continue
            m = d["model"]
            r = d.get("retain", {}).get("recovery")
            lines.append(f"{name:16s} {v:22s} {m['before']:8.4f} {m['after']:8.4f} {m['target']:8.4f} "
                         f"{_num(m['recovery'], 9)} {_num(r, 8)}")
    return "\n".join(lines)


def _num(x, width: int) -> str:
    """A recovery for the table: null (0/0, written so in strict JSON) shows as n/a."""
    return f"{x:{width}.3f}" if isinstance(x, (int, float)) else f"{'n/a':>{width}s}"


def run_robustness(args, variables: dict) -> int:
    """`llm-forget eval --suite robustness --model M --target-model T [--retain-model R]`: prints the
    table, writes OUTPUT/robustness.json with --output."""
    from ..errors import UserError
    from ..evaluation.robustness import attack, is_attack_suite

    if not args.target_model:
        raise UserError("a robustness suite needs --target-model (the model before unlearning)")
    if not is_attack_suite(args.suite):
        raise UserError(f"--target-model is only used by robustness suites; {args.suite!r} has no attacks")
    if args.retain_model and str(args.retain_model).endswith(".json"):
        raise UserError("robustness attacks need the retain model itself, not its results.json")
    res = attack(args.model, args.target_model, args.suite, retain_model=args.retain_model,
                 batch_size=args.batch_size, data_dir=args.data_dir, variables=variables, limit=args.limit,
                 dtype=args.dtype, device=args.device, output=args.output)
    print(f"robustness suite {res['suite']['name']} on {args.model} ({res['wall_seconds']:.1f}s); "
          "recovery: 0 = nothing recovered, 1 = all")
    print(format_table(res))
    if args.output:
        print(f"results: {args.output}/robustness.json")
    return 0
