"""A training run that can SIGKILL itself at a chosen point, for the resume and atomic-checkpoint tests.

    python tests/_killable_run.py OUT MODEL TRAIN_JSONL WORKERS [--kill-at-step N | --kill-saving N] [--resume]

--kill-at-step N   SIGKILL at the start of optimizer step N+1 (after checkpoint-N, if any, was written);
--kill-saving N    SIGKILL while checkpoint-N is being written (model saved, optimizer not yet).
SIGKILL, not an exception: nothing gets to clean up, as with a preempted node or the OOM killer.
"""

import argparse
import os
import signal

import mmft.recipe
import mmft.workflow
from mmft.train.trainer import VLMTrainer

parser = argparse.ArgumentParser()
parser.add_argument("output_dir")
parser.add_argument("model_dir")
parser.add_argument("train_jsonl")
parser.add_argument("workers", type=int)
parser.add_argument("--kill-at-step", type=int)
parser.add_argument("--kill-saving", type=int)
parser.add_argument("--resume", action="store_true")
args = parser.parse_args()


class KillableTrainer(VLMTrainer):
    def training_step(self, model, inputs, num_items_in_batch=None):
        if args.kill_at_step is not None and self.state.global_step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_optimizer_and_scheduler(self, output_dir):
        if args.kill_saving is not None and self.state.global_step == args.kill_saving:
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._save_optimizer_and_scheduler(output_dir)


mmft.workflow.VLMTrainer = KillableTrainer
mmft.recipe.finetune(
    model=args.model_dir,
    train_dataset=args.train_jsonl,
    output_dir=args.output_dir,
    max_train_samples=16,
    per_device_train_batch_size=4,
    max_steps=6,  # 1.5 epochs of 4 steps: resume crosses an epoch boundary
    save_steps=2,
    save_total_limit=2,
    learning_rate=5e-3,
    lora_dropout=0.1,  # random: resume must restore the RNG to be exact
    logging_steps=1,
    dataloader_num_workers=args.workers,
    report_to=[],
    seed=7,
    resume_from_checkpoint="true" if args.resume else None,
)
