def add_parser(sub):
    p = sub.add_parser("compare", help="side-by-side table and trade-off plot of several evaluations",
                       description="Compare results: each argument is a results.json or a folder holding one "
                                   "(an `llm-forget eval --output` or `llm-forget unlearn` folder).")
    p.add_argument("results", nargs="+", help="results.json files or run folders")
    p.add_argument("--plot", default=None, help="write a forget-quality vs model-utility PNG here")
    p.add_argument("--output", default=None, help="also write the markdown table to this file")
    p.set_defaults(run=run)


def run(args):
    from .. import io
    from ..evaluation.compare import compare_table, load_runs, tradeoff_plot

    runs = load_runs(args.results)
    table = compare_table(runs)
    print(table)
    if args.output:
        io.write_text(args.output, table + "\n")
    if args.plot:
        tradeoff_plot(runs, args.plot)
        print(f"plot: {args.plot}")
    return 0
