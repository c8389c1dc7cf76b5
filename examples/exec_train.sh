#!/usr/bin/env bash
# The seed's exec_train.sh, for gpt2chat: the same arguments under the same names.
# (See the seed-argument map in README.md for what each one became.)
#
# Usage: sh examples/exec_train.sh [more gpt2chat train arguments...]
# Several GPUs:   torchrun --nproc_per_node 4 -m gpt2chat train <the same arguments>
set -euo pipefail

gpt2chat train \
    --seed 0 \
    --data_dir data \
    --train_prefix train \
    --valid_prefix valid \
    --model_type gpt2 \
    --bos_token "<bos>" \
    --sp1_token "<sp1>" \
    --sp2_token "<sp2>" \
    --gpu 0 \
    --lr 2e-5 \
    --warmup_ratio 0.1 \
    --batch_size 8 \
    --num_workers 0 \
    --num_epochs 10 \
    --max_len 1024 \
    --max_turns 5 \
    --ckpt_dir saved_models \
    "$@"
# Resume an interrupted run:  sh examples/exec_train.sh --ckpt_name checkpoint-5000
