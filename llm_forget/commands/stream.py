def add_parser(sub):
    from ..threads import add_argument as add_threads

    p = sub.add_parser("stream", help="apply a stream of deletion requests, evaluating after each",
                       description="llm-forget stream RECIPE.yaml --requests requests.jsonl [--key value ...]: "
                                   "unlearn each request in order from the previous step's model; writes "
                                   "OUTPUT_DIR/stream.md, stream.json, plots/stream.png and one run folder per step.")
    p.add_argument("recipe", help="recipe YAML or shipped recipe name (npo, grad_diff, ...)")
    p.add_argument("--requests", required=True, help="request file (.jsonl/.json/.yaml), applied in order")
    add_threads(p)
    p.set_defaults(run=run, accepts_overrides=True)


def run(args):
    from ..config import parse_overrides
    from ..recipes_index import resolve_recipe
    from ..stream import run_stream, table

    ov = parse_overrides(args.overrides)
    overwrite = str(ov.pop("overwrite", "false")).lower() == "true"
    out = run_stream(str(resolve_recipe(args.recipe)), args.requests, ov.pop("output_dir", None), overwrite, **ov)
    print(table(out["steps"]))
    print(f"outputs: {out['output_dir']} (stream.md, stream.json, plots/stream.png)")
    return 0
