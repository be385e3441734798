"""``python -m cnnzoo.train`` under torchrun, saving each process's final weights to OUTPUT/rank{RANK}.pt.

torchrun --nproc_per_node=2 tests/ddp_worker.py --config ... --output-dir OUTPUT
"""

import os
import sys

import torch

import cnnzoo.train as train_module

run_training = train_module.train


def train_and_save(cfg, *args, **kwargs):
    model = run_training(cfg, *args, **kwargs)
    torch.save(model.state_dict(), os.path.join(cfg.output_dir, f"rank{os.environ['RANK']}.pt"))
    return model


train_module.train = train_and_save
sys.exit(train_module.main())
