def add_training_args(p):
    """The fine-tuning options `finetune` and `retrain` share."""
    from ..threads import add_argument as add_threads

    p.add_argument("--model", help="model folder or zoo name (required)")
    p.add_argument("--data", help="data spec: a .json/.jsonl/.csv/.txt file, a saved dataset, builtin:train "
                                  "(required)")
    p.add_argument("--output", help="output folder (required)")
    p.add_argument("--epochs", type=float, default=10, help="epochs over the data (ignored with --max_steps)")
    p.add_argument("--max_steps", type=int, default=-1, help="optimisation steps; > 0 overrides --epochs")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate (cosine schedule)")
    p.add_argument("--batch_size", type=int, default=32, help="rows per step")
    p.add_argument("--max_length", type=int, default=256, help="longest sequence in tokens")
    p.add_argument("--lora_r", type=int, default=0, help="LoRA rank (merged into the saved model); 0 = full model")
    p.add_argument("--chat_template", action="store_true", help="wrap questions in the tokenizer's chat template")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--options", action="store_true", help="list every option with its help and default")
    add_threads(p)


def add_parser(sub):
    p = sub.add_parser("finetune", help="fine-tune a model on question/answer or text rows (a target or retain model)",
                       description="Supervised fine-tuning on the answer tokens (or every token of text rows). "
                                   "For a target and a retain model with matched steps use `llm-forget retrain`.")
    add_training_args(p)
    p.set_defaults(run=run, parser=p)


def required(args, *names):
    from ..errors import UserError

    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        names = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        raise UserError(f"{names} {'is' if len(missing) == 1 else 'are'} required "
                        f"(`llm-forget {args.command} --options` lists every option)")


def settings(args) -> dict:
    return dict(epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
                batch_size=args.batch_size, max_length=args.max_length, lora_r=args.lora_r,
                chat_template=args.chat_template, seed=args.seed, overwrite=args.overwrite)


def run(args):
    from ._options import parser_options

    if args.options:
        print("\n".join(parser_options(args.parser)))
        return 0
    required(args, "model", "data", "output")
    from ..finetune import finetune

    r = finetune(args.model, args.data, args.output, **settings(args))
    print(f"fine-tuned in {r['train_seconds']:.1f}s, {r['steps']} steps, final loss {r['final_loss']:.3f}: "
          f"{r['output_dir']}")
    return 0
