"""``python -m cnnzoo.train`` under torchrun, where rank 1 kills itself (SIGKILL, no chance to save)
at optimizer step KILL_AT_STEP of the job's first attempt; torchrun restarts every worker.

    KILL_AT_STEP=9 torchrun --max-restarts 1 --nproc_per_node=2 tests/restart_worker.py --config ... --resume auto
"""

import os
import signal
import sys

import cnnzoo.train as train_module

step_once = train_module.train_step
steps = 0


def train_step_or_die(*args, **kwargs):
    global steps
    steps += 1
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_attempt and os.environ["RANK"] == "1" and steps == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step_once(*args, **kwargs)


train_module.train_step = train_step_or_die
sys.exit(train_module.main())
