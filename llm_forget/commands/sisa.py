def add_parser(sub):
    p = sub.add_parser("sisa", help="exact unlearning: SISA training over LoRA shards, and exact deletion",
                       description="llm-forget sisa train [RECIPE.yaml] [--key value ...]: train S shard adapters "
                                   "in R slices (options: shards, slices, epochs_per_slice, data, model, lora_r, "
                                   "aggregation, output_dir, ...). "
                                   "llm-forget sisa forget RUN_DIR --request FILE: delete the request's rows exactly, "
                                   "retraining every shard that holds a copy of a deleted row from its last clean checkpoint.")
    p.add_argument("action", choices=["train", "forget", "options"], help="train, forget, or options (list options)")
    p.add_argument("path", nargs="?", help="train: recipe YAML (optional); forget: the SISA run folder")
    p.add_argument("--request", default=None, help="forget: request file (items / concept; FILE or FILE#N)")
    p.add_argument("--signing-key", dest="signing_key", default=None,
                   help="Ed25519 key file that signs the ledger entry (default: the per-user key; none: unsigned)")
    p.set_defaults(run=run, accepts_overrides=True)


def run(args):
    from ..errors import UserError

    if args.action == "options":
        import dataclasses

        from ..exact.sisa import SisaConfig

        for f in dataclasses.fields(SisaConfig):
            print(f"--{f.name} (default {f.default!r}): {f.metadata['help']}")
        return 0
    from ..config import parse_overrides
    from ..exact import sisa

    if args.action == "train":
        extra = {"signing_key": args.signing_key} if args.signing_key else {}
        r = sisa.train(args.path, **parse_overrides(args.overrides), **extra)
        print(f"SISA trained: {r['steps']} steps in {r['train_seconds']:.1f}s; outputs: {r['output_dir']}")
        return 0
    if args.overrides:
        raise UserError(f"sisa forget takes RUN_DIR --request FILE only (got {' '.join(args.overrides)})")
    if not args.path or not args.request:
        raise UserError("usage: llm-forget sisa forget RUN_DIR --request FILE")
    c = sisa.forget(args.path, args.request, args.signing_key)
    print(f"forgotten exactly: shards {c['shards_retrained']} retrained, {c['steps_retrained']} steps "
          f"vs {c['full_retrain_steps']} for full retraining ({100 * c['fraction_of_full']:.0f}%)")
    return 0
