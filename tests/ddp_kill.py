"""`trainlab train ARGS` under torchrun, except that on the first attempt the rank named by
$KILL_RANK sends itself SIGKILL after update $KILL_STEP, first touching $KILL_MARK (so the test
knows when the job lost its process). Used by tests/test_distributed.py; a restarted attempt
(TORCHELASTIC_RESTART_COUNT > 0) trains normally."""
import os
import signal
import sys
from pathlib import Path

import trainlab.cli
from trainlab.cli import main
from trainlab.train import Callback


class KillAt(Callback):
    name = "kill_at"

    def on_step_end(self, trainer, step) -> None:
        if step.step == int(os.environ["KILL_STEP"]) and os.environ["RANK"] == os.environ["KILL_RANK"]:
            Path(os.environ["KILL_MARK"]).touch()
            os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    train_run = trainlab.cli.train_run
    trainlab.cli.train_run = lambda *args, **kw: train_run(*args, callbacks=[KillAt()], **kw)
sys.exit(main(sys.argv[1:]))
