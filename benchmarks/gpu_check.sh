#!/usr/bin/env bash
# One-shot GPU check on one GPU within a time budget (GPU_CHECK_BUDGET seconds, default 540); one log:
#   bash benchmarks/gpu_check.sh [LOG]          (default: $OUT/gpu_check.log, else ./gpu_check.log)
#   AUTHORS_CODE=/path/to/CorrMatch AUTHORS_CODE_V2=/path/to/UniMatch-V2 bash benchmarks/gpu_check.sh
#                                               # with parts 2 and 3, the authors' iterations
# The parts, most wanted first:
# 1. the tests that need CUDA (region propagation and threshold on the GPU, 16- and bf16-mixed precision);
# 2. with AUTHORS_CODE set to a checkout of https://github.com/BBBBchan/CorrMatch, and 3. with
#    AUTHORS_CODE_V2 set to one of https://github.com/LiheYoung/UniMatch-V2 (cloned by whoever runs this;
#    read at run time, nothing of them is stored in the project): benchmarks/authors_step.py, the
#    authors' own training iteration (the loop body of their corrmatch.py / unimatch_v2.py, fp32) beside
#    the toolkit's step of the same method (CorrMatch on ResNet-101 at 321, UniMatch V2 on DINOv2-S at
#    518), eager and compiled, fp32 and bf16 (and CorrMatch eager in channels_last), on the same batch,
#    with the ratio, peak memory and whether the 0.5x goal is met (einops is used when installed, else a
#    stand-in for the reshapes CorrMatch's code asks of it);
# 4. benchmarks/step_time.py on the paper network (tu-resnet101s, crop 321, 4 labeled + 4 unlabeled)
#    and on DINOv2-S/-B (crop 518), fp32 and bf16 autocast, with peak memory;
# 5. the same for UniMatch V2 on DINOv2-S/-B with the networks compiled (step_time.py --compile default);
# 6. benchmarks/end_to_end.py: the Pascal paper config (CorrMatch, crop 321, 4 + 4) through train.py fit on
#    generated 500x375 images, iterations per second with data loading and the share of time spent
#    waiting for data, num_workers from the machine's cores;
# 7. benchmarks/pseudo_label.py, whose CUDA rows run under torch.cuda.set_sync_debug_mode("error");
# 8. the demo (configs/demo.yaml: CorrMatch, 150 iterations, one validation) with
#    --trainer.accelerator gpu --trainer.precision bf16-mixed, to set beside its CPU figure.
# Each part runs under its own time limit, cut to what the budget has left; a part that fails or is
# stopped does not stop the next, and once under 30 s of the budget are left the remaining parts are
# skipped (the log says so). SyncBatchNorm's numerics with two processes need two GPUs (NCCL refuses two
# ranks on one device); on one GPU they are not checked here.
# The benchmarks (2-7) also write their figures as JSON into ${OUT:-.}/results (their --results), laid
# out as benchmarks/results is, with the machine, torch version, date, commit and command; each file is
# written when its part ends, so the parts that finished keep their files whatever happens later.
# The machine needs the project's requirements (pip install -e ".[dev]", or the project on PYTHONPATH);
# nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${1:-${OUT:-.}/gpu_check.log}
results=${OUT:-.}/results
budget=${GPU_CHECK_BUDGET:-540}
python=$(command -v python3 || command -v python)
work=$(mktemp -d)
export WANDB_MODE=offline PYTHONUNBUFFERED=1
start=$SECONDS
part() {  # part LIMIT TITLE COMMAND...: COMMAND under min(LIMIT, what is left of the budget)
    local limit=$1 title=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    echo
    echo "== $title ($(date -u +%H:%M:%S); ${left} s of the budget left)"
    if [ "$left" -lt 30 ]; then
        echo "skipped: the budget is spent"
        return 0
    fi
    timeout "$((limit < left ? limit : left))" "$@"
    local status=$?
    [ "$status" -eq 124 ] && echo "stopped at its time limit"
    [ "$status" -ne 0 ] && echo "exit status $status"
    return 0
}
{
    echo "== device"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    part 120 "CUDA tests" "$python" -m pytest -q -p no:cacheprovider -rs \
        tests/test_region_propagation.py tests/test_threshold.py tests/test_methods.py -k "cuda or mixed"
    # variable:option:method[:extra option]; channels_last rows for the ResNet only
    for release in AUTHORS_CODE:--authors-code:CorrMatch:--channels-last AUTHORS_CODE_V2:--authors-code-v2:UniMatchV2; do
        IFS=: read -r variable option method extra <<< "$release"
        if [ -n "${!variable:-}" ]; then
            # shellcheck disable=SC2086  # $extra: no option, or one
            part 240 "the authors' $method iteration beside the toolkit's (${!variable})" \
                env -u AUTHORS_CODE -u AUTHORS_CODE_V2 "$python" benchmarks/authors_step.py \
                "$option" "${!variable}" --steps 5 $extra --results "$results"
        else
            echo; echo "== the authors' $method iteration: skipped ($variable not set)"
        fi
    done
    part 180 "step time (paper network crop 321; DINOv2-S/B crop 518; fp32 and bf16)" \
        "$python" benchmarks/step_time.py --steps 5 --results "$results"
    part 200 "step time compiled (UniMatch V2, DINOv2-S/B crop 518; fp32 and bf16)" \
        "$python" benchmarks/step_time.py --steps 5 --methods UniMatchV2 --networks dinov2_small dinov2_base \
        --compile default --results "$results"
    part 150 "end to end (Pascal paper config, generated images, data loading included)" \
        "$python" benchmarks/end_to_end.py --steps 30 --warmup 5 --results "$results"
    part 60 "pseudo-labelling (CUDA rows under sync debug mode 'error')" \
        "$python" benchmarks/pseudo_label.py --results "$results"
    part 150 "the demo on the GPU in bf16 (CPU: BENCHMARKS.md, 'The demo')" \
        "$python" train.py fit --config configs/demo.yaml --trainer.accelerator gpu --trainer.precision bf16-mixed \
        --trainer.logger false --trainer.enable_progress_bar false --data.root "$work/demo" \
        --trainer.default_root_dir "$work/fit"
    echo; echo "== done in $((SECONDS - start)) s"
} 2>&1 | tee "$log"
rm -rf "$work"
