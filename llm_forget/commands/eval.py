def add_parser(sub):
    p = sub.add_parser("eval", help="evaluate a model on a suite (quick, tofu, muse or a YAML)",
                       description="Evaluate a model: forget quality, model utility, extraction, membership "
                                   "inference, consistency with a retrained model. Writes OUTPUT/results.json.")
    p.add_argument("--model", required=True, help="model folder or zoo name (tiny-target, smollm2-135m, ...)")
    p.add_argument("--suite", default="quick", help="quick (default), tofu, muse, or a suite YAML path")
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
                        "(default 2 with 2+ threads; 1 = one batch at a time). Numbers do not change")
    p.add_argument("--chat-template", action="store_true", default=None,
                   help="wrap questions in the tokenizer's chat template (instruct models)")
    p.add_argument("--require-auc-below", type=float, default=None, metavar="X",
                   help="release gate: exit 1 when the headline MIA AUC is above X")
    p.set_defaults(run=run)


SHOWN = ["forget_quality", "model_utility", "mia_auc", "privleak", "forget_perplexity", "retain_perplexity",
         "forget_extraction_strength", "forget_exact_memorization", "forget_rougeL_recall", "retain_rougeL_recall",
         "forget_truth_ratio", "knowmem_forget", "knowmem_retain", "text_perplexity", "param_distance"]


def run(args):
    import json
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
    from ..evaluation.robustness import is_attack_suite

    if is_attack_suite(args.suite) or args.target_model:  # robustness attacks: llm_forget/evaluation/robustness.py
        from ..evaluation.robustness import run_cli

        return run_cli(args, variables)
    res = evaluate(args.model, args.suite, retain_model=args.retain_model, reference_model=args.reference_model,
                   output=args.output, overwrite=args.overwrite, batch_size=args.batch_size, data_dir=args.data_dir,
                   variables=variables, limit=args.limit, dtype=args.dtype, device=args.device,
                   progress=sys.stderr.isatty(), chat_template=args.chat_template, lanes=args.lanes)
    s = res["summary"]
    keys = [k for k in SHOWN if k in s] + sorted(k for k in s if k.startswith("mia_auc_"))
    print(f"suite {res['suite']['name']} on {res['models']['model']['path']} ({res['wall_seconds']:.1f}s)")
    for k in keys:
        v = s[k]
        print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {json.dumps(v)}")
    if args.output:
        print(f"results: {args.output}/results.json")
    if args.require_auc_below is not None:
        auc = s.get("mia_auc")
        if auc is None:
            raise UserError("--require-auc-below: this suite computes no MIA AUC")
        if auc > args.require_auc_below:
            print(f"FAILED release gate: MIA AUC {auc:.4f} is above {args.require_auc_below}", file=sys.stderr)
            return 1
        print(f"release gate passed: MIA AUC {auc:.4f} <= {args.require_auc_below}")
    return 0
