def add_parser(sub):
    from .finetune import add_training_args

    p = sub.add_parser("retrain", help="the gold standard: a target and a retain model from one dataset and a "
                                       "forget split, with matched steps",
                       description="Fine-tune MODEL on all of DATA (OUTPUT/target) and on DATA without the forget "
                                   "split (OUTPUT/retain), both for the same number of optimisation steps (the "
                                   "target's epochs, or --max_steps). The splits are saved as OUTPUT/forget.json and "
                                   "OUTPUT/retain.json for `llm-forget unlearn`.")
    add_training_args(p)
    p.add_argument("--forget", help="the forget split: a data file whose rows are all in --data, or a fraction "
                                    "(e.g. 0.1: a seeded random sample) (required)")
    p.add_argument("--holdout", default=None, help="rows never trained on, checked to share no row with --data")
    p.add_argument("--allow_overlap", action="store_true", help="allow holdout rows that are also in --data")
    p.set_defaults(run=run, parser=p)


def run(args):
    from ._options import parser_options
    from .finetune import required, settings

    if args.options:
        print("\n".join(parser_options(args.parser)))
        return 0
    required(args, "model", "data", "forget", "output")
    from ..finetune import retrain

    r = retrain(args.model, args.data, args.forget, args.output, holdout=args.holdout,
                allow_overlap=args.allow_overlap, **settings(args))
    c = r["counts"]
    print(f"target ({c['data']} rows) and retain model ({c['retain']} rows, {c['forget']} forgotten), "
          f"{r['steps']} steps each: {args.output}/target, {args.output}/retain")
    return 0
