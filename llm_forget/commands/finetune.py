def add_parser(sub):
    p = sub.add_parser("finetune", help="fine-tune a model on question/answer rows (build a target or retain model)")
    p.add_argument("--model", required=True, help="model folder or zoo name")
    p.add_argument("--data", required=True, help="data spec (builtin:train, a .json file, ...)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lora_r", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=run)


def run(args):
    from pathlib import Path

    from ..api import prepare_output_dir
    from ..finetune import finetune

    prepare_output_dir(Path(args.output), args.overwrite, False, None)
    r = finetune(args.model, args.data, args.output, epochs=args.epochs, learning_rate=args.learning_rate,
                 batch_size=args.batch_size, seed=args.seed, lora_r=args.lora_r)
    print(f"fine-tuned in {r['train_seconds']:.1f}s, final loss {r['final_loss']:.3f}: {r['output_dir']}")
    return 0
