def add_parser(sub):
    p = sub.add_parser("models", help="list the offline model zoo and the architecture table")
    p.set_defaults(run=run)


def run(args):
    from ..models import ARCHITECTURES
    from ..zoo import SOURCES, cache_dir

    print(f"zoo (cached under {cache_dir()}):")
    for k, v in SOURCES.items():
        print(f"  {k:14s} {v}")
    print("architectures (config.model_type -> decoder blocks, MLP output projection):")
    for k, a in ARCHITECTURES.items():
        print(f"  {k:10s} {a.layers}[i].{a.mlp_out}{'  (Conv1D)' if a.conv1d else ''}")
    return 0
