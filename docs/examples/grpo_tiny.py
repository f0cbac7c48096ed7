"""GRPO with a prefsmith density-ratio reward, on tiny random models, on CPU (about 10 s).

    python docs/examples/grpo_tiny.py

For a real run, change the three model lines (see docs/online-rl.md).
"""

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from prefsmith import ModelOptions, ModelPool
from prefsmith.integrations.trl import reward_function
from prefsmith.testing import tiny_model

policy = tiny_model(seed=2)  # the model GRPO trains
strong, weak = tiny_model(seed=0), tiny_model(seed=1)  # the density ratio's pair

reward = reward_function(
    "density-ratio:sum",
    strong=strong,
    weak=weak,
    pool=ModelPool(ModelOptions(device="cpu")),
)
prompts = ["Say hello.", "Name a fruit.", "Count to three.", "Pick a colour."]
trainer = GRPOTrainer(
    model=policy,
    reward_funcs=reward,  # TRL logs its rewards as rewards/<scorer name>/mean
    args=GRPOConfig(
        output_dir="runs/grpo-tiny",
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
    ),
    train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
)
trainer.train()
print({k: v for k, v in trainer.state.log_history[-2].items() if k.startswith("rewards/")})
