def add_parser(sub):
    from ..threads import add_argument as add_threads

    p = sub.add_parser("demo", help="target + retain model on the built-in benchmark, every recipe, one table")
    p.add_argument("--model", default="tiny", help="tiny (default, ~5 min on 2 CPU cores), smollm2-135m, or a folder")
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--recipes", default=None, help="comma-separated shipped recipes (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--jobs", type=int, default=None,
                   help="recipes run side by side in this many processes (default: one per CPU other processes "
                        "leave free, each with --threads or one torch thread)")
    p.add_argument("--no-zero-shot", dest="zero_shot", action="store_false",
                   help="skip the zero-shot row (the first forget person forgotten from the name alone)")
    add_threads(p)
    p.set_defaults(run=run)


def run(args):
    from ..demo import run_demo

    r = run_demo(args.model, args.output, args.overwrite, args.recipes.split(",") if args.recipes else None,
                 jobs=args.jobs, threads=args.threads, zero_shot=args.zero_shot)
    print(r["report"])
    print(f"outputs: {r['output']} (summary.json, report.md, tradeoff.png"
          + (", zero_shot.json)" if r["zero_shot"] else ")"))
    return 0
