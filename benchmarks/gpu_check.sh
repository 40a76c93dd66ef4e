#!/usr/bin/env bash
# GPU check of the accelerate configs (single_gpu, fsdp, deepspeed_zero3); optional, nothing else needs a GPU.
# Runs NPO (cached reference log-probs) and KL (a frozen reference copy, so the reference is placed /
# sharded by trl's prepare_fsdp / prepare_deepspeed) with bf16 for STEPS steps under
#   accelerate_configs/single_gpu.yaml, fsdp.yaml (1 process) and deepspeed_zero3.yaml (1 process, if
#   deepspeed imports), then records train tokens/s, peak GPU memory (nvidia-smi, polled every 100 ms)
#   and the quick-eval forget/retain perplexity of each run. Copy the table into BENCHMARKS.md.
#
# Run, from the repository root, on a machine with one GPU:
#   bash benchmarks/gpu_check.sh                    # MODEL=tiny-target STEPS=30 by default
#   MODEL=/path/to/smollm2-135m STEPS=20 bash benchmarks/gpu_check.sh
# With the device tool (its machine lacks trl, datasets, scikit-learn, rouge-score and deepspeed): put their
# wheels in .whl/ (see /work/.library/device/README.md), and carry .whl and
# .cache/llm_forget/zoo/tiny-target-<hash> (the tiny model, ~6 MB). Results go to $OUT (or benchmarks/out/).
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-benchmarks/out}
RUNS=${RUNS:-/tmp/llm_forget_gpu_check}
MODEL=${MODEL:-tiny-target}
STEPS=${STEPS:-30}
mkdir -p "$RES" "$RUNS"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 LLM_FORGET_CACHE=${LLM_FORGET_CACHE:-$PWD/.cache/llm_forget} PYTHONUNBUFFERED=1
LOG=$RES/gpu_check.log
: > "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
python3 -c "import torch, transformers, accelerate, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)" | tee -a "$LOG"
HAVE_DS=$(python3 -c "import deepspeed" >/dev/null 2>&1 && echo 1 || echo 0)

for cfg in single_gpu fsdp deepspeed_zero3; do
  for method in npo kl; do
    name=$cfg-$method
    if [ "$cfg" = deepspeed_zero3 ] && [ "$HAVE_DS" = 0 ]; then
      echo "{\"run\": \"$name\", \"skipped\": \"deepspeed is not installed\"}" > "$RUNS/$name.status"; continue
    fi
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$RUNS/$name.mem" &
    poll=$!
    t0=$(date +%s.%N)
    timeout 300 python3 -m accelerate.commands.launch --config_file "accelerate_configs/$cfg.yaml" --num_processes 1 \
      -m llm_forget unlearn "$method" --model "$MODEL" --bf16 true --max_steps "$STEPS" \
      --per_device_train_batch_size 8 --output_dir "$RUNS/$name" --overwrite --disable_tqdm true >> "$LOG" 2>&1
    rc=$?
    kill "$poll" 2>/dev/null; wait "$poll" 2>/dev/null
    echo "{\"run\": \"$name\", \"rc\": $rc, \"wall_s\": $(echo "$(date +%s.%N) - $t0" | bc)}" > "$RUNS/$name.status"
    echo "== $name: exit status $rc" | tee -a "$LOG"
  done
done

python3 - "$RUNS" "$RES" "$MODEL" <<'EOF'
import json, sys
from pathlib import Path

runs, res, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
from llm_forget.data.encode import Encoder
from llm_forget.data.readers import read_rows
from llm_forget.models import load_tokenizer
from llm_forget.zoo import resolve_model_path

enc = Encoder(load_tokenizer(resolve_model_path(model)), "Question: {question}\nAnswer:", False, 256, "truncate")
mean_len = {s: sum(len(enc.row(r)["input_ids"]) for r in read_rows(f"builtin:{s}")) / len(read_rows(f"builtin:{s}"))
            for s in ("forget", "retain")}
rows = []
for st in sorted(runs.glob("*.status")):
    r = json.loads(st.read_text())
    out = runs / r["run"] / "results.json"
    if r.get("rc") == 0 and out.exists():
        j = json.loads(out.read_text())
        env, s = j["environment"], j.get("summary", {})
        tokens = j["steps"] * env["effective_batch"] * (mean_len["forget"] + mean_len["retain"])
        mem = [int(x) for x in (runs / (r["run"] + ".mem")).read_text().split() if x.isdigit()]
        r.update(distributed_type=env["distributed_type"], steps=j["steps"], reference=j["reference"],
                 train_s=round(j["timings"]["train_seconds"], 2),
                 tokens_per_s=round(tokens / j["timings"]["train_seconds"]),
                 peak_mem_mib=max(mem) if mem else None,
                 forget_ppl=round(s.get("forget_perplexity", float("nan")), 3),
                 retain_ppl=round(s.get("retain_perplexity", float("nan")), 3))
    rows.append(r)
(res / "gpu_check.json").write_text(json.dumps({"model": model, "runs": rows}, indent=1))
cols = ["run", "rc", "distributed_type", "reference", "steps", "train_s", "tokens_per_s", "peak_mem_mib",
        "forget_ppl", "retain_ppl", "skipped"]
lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
(res / "gpu_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
